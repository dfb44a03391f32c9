//! Which Kafka API a frame belongs to, as far as the `kafka-protocol` crate knows it.

use kafka_protocol::messages::ApiKey;

/// The API of a request, or `None` for an API key the crate does not know (a vendor key, or one
/// newer than the crate). Unknown keys share one label so they cannot blow up metric cardinality.
pub type ApiLabel = Option<ApiKey>;

pub fn classify(api_key: i16) -> ApiLabel {
    ApiKey::try_from(api_key).ok()
}

/// The name used in metric names and logs: the crate's variant name (`Produce`, `ApiVersions`,
/// ...) or `unknown`.
pub fn label_name(label: ApiLabel) -> String {
    match label {
        Some(key) => format!("{key:?}"),
        None => "unknown".to_string(),
    }
}

/// An API as a configuration names it: its name as in the metrics (`Produce`, `ApiVersions`) or
/// its key.
pub fn api_key_named(name: &str) -> Option<i16> {
    if let Ok(k) = name.parse::<i16>() {
        return (k >= 0).then_some(k);
    }
    (0..=i16::from(u8::MAX)).find(|k| classify(*k).is_some() && label_name(classify(*k)) == name)
}

/// Whether the crate has a schema for this version of the API.
pub fn version_known(api: ApiKey, version: i16) -> bool {
    let range = api.valid_versions();
    range.min <= version && version <= range.max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert_eq!(label_name(classify(0)), "Produce");
        assert_eq!(label_name(classify(18)), "ApiVersions");
        assert_eq!(label_name(classify(10000)), "unknown");
        assert_eq!(label_name(classify(-1)), "unknown");
        assert!(version_known(ApiKey::Metadata, 12));
        assert!(!version_known(ApiKey::Metadata, 999));
    }
}
