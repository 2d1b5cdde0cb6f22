//! Specs that have passed their checks, as a type: the API validates a request once, and what
//! it hands on (to the Raft log, to the state machine) cannot be an unchecked spec.

use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::problem::FieldError;

/// A spec with checks that depend on nothing but itself.
pub trait Validate: Sized {
    /// Checks the spec and puts it in canonical form (defaults filled in, MACs lower case).
    /// Must be idempotent: a validated spec validates to itself.
    fn validate(self) -> Result<Self, FieldError>;
}

/// A spec that passed [`Validate::validate`]. It can only be made by validating, and that
/// includes deserializing one: a log entry or a peer's message is checked like a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid<T>(T);

impl<T: Validate> Valid<T> {
    /// Validates `spec`.
    pub fn new(spec: T) -> Result<Valid<T>, FieldError> {
        spec.validate().map(Valid)
    }
}

impl<T> Valid<T> {
    /// The spec.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Valid<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Serialize> Serialize for Valid<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Validate + Deserialize<'de>> Deserialize<'de> for Valid<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Valid<T>, D::Error> {
        Valid::new(T::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

macro_rules! validate_by_inherent {
    ($($t:ty),*) => {$(
        impl Validate for $t {
            fn validate(self) -> Result<Self, FieldError> {
                <$t>::validated(self)
            }
        }
    )*};
}

validate_by_inherent!(
    crate::NetworkSpec,
    crate::EndpointSpec,
    crate::HostSpec,
    crate::RouterSpec,
    crate::PolicySpec,
    crate::endpoint::EndpointLabels,
    crate::endpoint::EndpointPublish,
    crate::trace::TraceRequest,
    crate::trace::TraceOutput
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NetworkSpec;

    #[test]
    fn only_checked_specs_get_through_even_from_json() {
        let v = Valid::new(NetworkSpec::overlay("red", "10.1.0.0/24")).unwrap();
        assert_eq!(v.gateway, Some("10.1.0.1".parse().unwrap()), "canonical form filled in");
        let json = serde_json::to_string(&v).unwrap();
        let back: Valid<NetworkSpec> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v, "validation is idempotent");
        let bad = json.replace("10.1.0.0/24", "10.1.0.0/33");
        let err = serde_json::from_str::<Valid<NetworkSpec>>(&bad).unwrap_err().to_string();
        assert!(err.contains("subnet"), "{err}");
    }
}
