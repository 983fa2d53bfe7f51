//! Who a connection is: the [`Identity`] the `$connect` authorizer verifies once and API
//! Gateway then hands to every later route in its authorizer context, so no later frame
//! re-verifies a token. Besides the token's grants, the owner of `user:<sub>` may always
//! `subscribe` to it and read its `history`.

use std::collections::HashMap;

use serde_json::Value;

use super::capabilities::{Action, Capabilities};
use crate::protocol::Channel;

/// An authenticated connection's user and capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user (`sub` claim).
    pub sub: String,
    /// What the token allows.
    pub capabilities: Capabilities,
    /// The token's expiry, Unix seconds.
    pub exp: u64,
}

/// Whether a token that expires at `exp` (Unix seconds) has expired at `now_secs`: the
/// one rule for refusing a connection's actions and skipping its subscriptions.
pub fn token_expired(exp: u64, now_secs: u64) -> bool {
    exp < now_secs
}

impl Identity {
    /// Whether the token behind this identity has expired at `now_secs`.
    pub fn expired(&self, now_secs: u64) -> bool {
        token_expired(self.exp, now_secs)
    }

    /// Whether this identity may do `action` on `channel`: a grant in the token, or the
    /// owner reading their personal `user:<sub>` channel.
    pub fn may(&self, action: Action, channel: &Channel) -> bool {
        if matches!(action, Action::Subscribe | Action::History)
            && channel
                .as_str()
                .strip_prefix("user:")
                .is_some_and(|owner| owner == self.sub)
        {
            return true;
        }
        self.capabilities.grants(channel.as_str(), action)
    }

    /// The authorizer context API Gateway passes to every later route. Values must be
    /// strings, numbers or booleans, so the capabilities travel as JSON text.
    pub fn to_context(&self) -> HashMap<String, Value> {
        HashMap::from([
            ("sub".to_owned(), Value::from(self.sub.clone())),
            ("caps".to_owned(), Value::from(self.capabilities.to_json())),
            ("exp".to_owned(), Value::from(self.exp)),
        ])
    }

    /// Reads the identity back from `requestContext.authorizer`.
    pub fn from_context(fields: &HashMap<String, Value>) -> Result<Self, String> {
        let sub = fields
            .get("sub")
            .and_then(Value::as_str)
            .ok_or("authorizer context has no `sub`")?
            .to_owned();
        let caps = fields
            .get("caps")
            .and_then(Value::as_str)
            .ok_or("authorizer context has no `caps`")?;
        // API Gateway may hand numbers on as strings.
        let exp = match fields.get("exp") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or("authorizer context has no numeric `exp`")?;
        Ok(Self {
            sub,
            capabilities: Capabilities::from_json(caps)?,
            exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[test]
    fn owners_may_read_their_personal_channel() {
        let identity = Identity {
            sub: "alice".into(),
            capabilities: Capabilities::default(),
            exp: 0,
        };
        assert!(identity.may(Action::Subscribe, &channel("user:alice")));
        assert!(identity.may(Action::History, &channel("user:alice")));
        assert!(!identity.may(Action::Publish, &channel("user:alice")));
        assert!(!identity.may(Action::Subscribe, &channel("user:alice2")));
        assert!(!identity.may(Action::Subscribe, &channel("user:bob")));
    }

    #[test]
    fn identity_survives_the_authorizer_context() {
        let identity = Identity {
            sub: "alice".into(),
            capabilities: Capabilities::from_claim(BTreeMap::from([(
                "chat:*".to_owned(),
                vec!["subscribe".to_owned()],
            )]))
            .unwrap(),
            exp: 1_900_000_000,
        };
        let context = identity.to_context();
        assert!(context.values().all(|v| v.is_string() || v.is_number()));
        assert_eq!(Identity::from_context(&context).unwrap(), identity);
        let mut stringly = context.clone();
        stringly.insert("exp".into(), Value::from("1900000000"));
        assert_eq!(Identity::from_context(&stringly).unwrap(), identity);
        stringly.remove("caps");
        assert!(Identity::from_context(&stringly).is_err());
    }
}
