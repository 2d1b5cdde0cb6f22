//! Batches: many changes in one request, applied all or nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{EndpointSpec, NetworkSpec, PolicySpec, RouterSpec};

/// One change of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Creates or replaces a network.
    PutNetwork {
        /// The network.
        spec: NetworkSpec,
    },
    /// Deletes a network (with `force`, its endpoints and policies too).
    DeleteNetwork {
        /// Its name.
        name: String,
        /// Delete what it holds too.
        #[serde(default)]
        force: bool,
    },
    /// Creates an endpoint, allocating its address unless it names one.
    CreateEndpoint {
        /// Its network.
        network: String,
        /// The endpoint.
        spec: EndpointSpec,
    },
    /// Deletes an endpoint.
    DeleteEndpoint {
        /// Its network.
        network: String,
        /// Its id.
        id: String,
    },
    /// Replaces an endpoint's labels.
    SetEndpointLabels {
        /// Its network.
        network: String,
        /// Its id.
        id: String,
        /// The labels.
        labels: BTreeMap<String, String>,
    },
    /// Creates or replaces a router.
    PutRouter {
        /// The router.
        spec: RouterSpec,
    },
    /// Deletes a router.
    DeleteRouter {
        /// Its name.
        name: String,
    },
    /// Creates or replaces a policy.
    PutPolicy {
        /// The policy.
        spec: PolicySpec,
    },
    /// Deletes a policy.
    DeletePolicy {
        /// Its name.
        name: String,
    },
}

/// What a client sends to change many objects at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The changes, applied in order; if one is refused, none is applied.
    #[schema(max_items = 10000)]
    pub operations: Vec<Operation>,
}

/// Most operations one batch may hold.
pub const MAX_OPERATIONS: usize = 10_000;
