# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The options every plexus.network module shares."""

    # How to reach the controller: the CLI's environment variables work too.
    DOCUMENTATION = r"""
options:
  api_url: {description: Controller URL (env PLEXUS_API)., type: str, required: true}
  ca: {description: The cluster CA's certificate (env PLEXUS_CA)., type: path}
  token: {description: A bearer token (env PLEXUS_TOKEN)., type: str, required: true}
"""

    # For modules that keep one object present or absent.
    STATE = r"""
options:
  state: {description: present or absent., type: str, choices: [present, absent], default: present}
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
"""
