//! Applying a [`NameMapper`] to the name fields of decoded messages, remembering whether anything
//! changed (so that an untouched frame is forwarded as the original bytes).

use kafka_protocol::messages::{GroupId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::Hints;
use crate::topics::mapping::{NameKind, NameMapper, ToClient};

/// A name field of a decoded message: the `TopicName`, `GroupId` and `TransactionalId` newtypes,
/// or a plain string where the schema has no newtype (FindCoordinator keys, config resources).
pub(super) trait NameField {
    fn name(&self) -> &str;
    fn set_name(&mut self, name: String);
}

macro_rules! newtype_name_field {
    ($($t:ty),*) => {$(
        impl NameField for $t {
            fn name(&self) -> &str {
                self.0.as_str()
            }
            fn set_name(&mut self, name: String) {
                self.0 = StrBytes::from_string(name);
            }
        }
    )*};
}

newtype_name_field!(TopicName, GroupId, TransactionalId);

impl NameField for StrBytes {
    fn name(&self) -> &str {
        self.as_str()
    }
    fn set_name(&mut self, name: String) {
        *self = StrBytes::from_string(name);
    }
}

/// The mapper of one rule, applied to one message.
pub(super) struct Names<'a> {
    mapper: &'a dyn NameMapper,
    hints: Hints,
    changed: bool,
}

impl<'a> Names<'a> {
    pub(super) fn new(mapper: &'a dyn NameMapper, hints: Hints) -> Self {
        Names {
            mapper,
            hints,
            changed: false,
        }
    }

    /// What the request said that its response does not repeat.
    pub(super) fn hints(&self) -> Hints {
        self.hints
    }

    /// Whether any name was replaced or any element dropped.
    pub(super) fn changed(&self) -> bool {
        self.changed
    }

    // ---- requests: client (logical) names to broker (physical) names ----

    /// Replaces a name the client sent by its broker-side name, if the rule maps it.
    pub(super) fn for_broker<N: NameField>(&mut self, kind: NameKind, name: &mut N) {
        if let Some(physical) = self.mapper.to_broker(kind, name.name()) {
            if physical != name.name() {
                name.set_name(physical);
                self.changed = true;
            }
        }
    }

    /// [`Self::for_broker`] for a nullable name (`None` stays `None`).
    pub(super) fn for_broker_opt<N: NameField>(&mut self, kind: NameKind, name: &mut Option<N>) {
        if let Some(name) = name {
            self.for_broker(kind, name);
        }
    }

    /// [`Self::for_broker`] for every name of a list.
    pub(super) fn for_broker_all<N: NameField>(&mut self, kind: NameKind, names: &mut [N]) {
        for name in names {
            self.for_broker(kind, name);
        }
    }

    // ---- responses: broker (physical) names to client (logical) names ----

    /// Replaces a name the broker sent by what the client is shown. Returns false if the client
    /// must not see it: the caller drops the element that carries it.
    pub(super) fn for_client<N: NameField>(&mut self, kind: NameKind, name: &mut N) -> bool {
        match self.mapper.to_client(kind, name.name()) {
            ToClient::Same => true,
            ToClient::Renamed(logical) => {
                if logical != name.name() {
                    name.set_name(logical);
                    self.changed = true;
                }
                true
            }
            ToClient::Hidden => false,
        }
    }

    /// [`Self::for_client`] for a nullable name: a null name (a topic known by id only) is kept.
    pub(super) fn for_client_opt<N: NameField>(
        &mut self,
        kind: NameKind,
        name: &mut Option<N>,
    ) -> bool {
        match name {
            Some(name) => self.for_client(kind, name),
            None => true,
        }
    }

    /// Keeps the elements for which `keep` returns true (`keep` renames what it keeps).
    pub(super) fn retain<T>(
        &mut self,
        items: &mut Vec<T>,
        mut keep: impl FnMut(&mut Self, &mut T) -> bool,
    ) {
        let before = items.len();
        items.retain_mut(|item| keep(self, item));
        if items.len() != before {
            self.changed = true;
        }
    }

    /// Keeps the names of a list the client may see, renamed.
    pub(super) fn retain_names<N: NameField>(&mut self, kind: NameKind, names: &mut Vec<N>) {
        self.retain(names, |n, name| n.for_client(kind, name));
    }

    /// What the client is shown for `name` under either of two kinds, when the message does not
    /// say which kind it is: the logical name if exactly one logical name comes out of the two
    /// mappings, the name itself if neither renames it, `None` if they disagree.
    pub(super) fn for_client_either<N: NameField>(
        &mut self,
        kinds: [NameKind; 2],
        name: &mut N,
    ) -> Option<()> {
        let [a, b] = kinds;
        let renamed = |kind| match self.mapper.to_client(kind, name.name()) {
            ToClient::Renamed(logical) => Some(logical),
            ToClient::Same | ToClient::Hidden => None,
        };
        let logical = match (renamed(a), renamed(b)) {
            (Some(x), Some(y)) if x != y => return None,
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => return Some(()),
        };
        if logical != name.name() {
            name.set_name(logical);
            self.changed = true;
        }
        Some(())
    }
}
