//! Development tokens: what `make token`, the banner, the demo app's `/demo/token` and
//! the load generator sign with the local secret, and which users they may name.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::gateway::DevTokens;

/// Longest `sub` of a development token: `user:<sub>` must fit a channel name.
pub const MAX_TOKEN_USER_LEN: usize = deltacast::protocol::MAX_CHANNEL_LEN - "user:".len();

/// Where `deltacast-local token` takes its user from, as [`check_token_user`] names it.
pub const TOKEN_USER_FROM_CLI: &str = "--user, make token USER=...";

/// Where the demo app's token route takes its user from, as [`check_token_user`] names it.
pub const TOKEN_USER_FROM_DEMO: &str = "?user= of /demo/token";

/// Checks the `sub` of a development token: 1 to [`MAX_TOKEN_USER_LEN`] characters that
/// may appear in a channel name, so that the user's own channel `user:<sub>` exists. The
/// error names the rule and `given_as`, where the caller took the user from
/// ([`TOKEN_USER_FROM_CLI`], [`TOKEN_USER_FROM_DEMO`]).
pub fn check_token_user(user: &str, given_as: &str) -> Result<(), String> {
    let fits = !user.is_empty()
        && user.len() <= MAX_TOKEN_USER_LEN
        && user.chars().all(deltacast::protocol::is_channel_char);
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the user ({given_as}) must be 1 to {MAX_TOKEN_USER_LEN} characters of \
             A-Z a-z 0-9 _ - : . @ (no spaces), so that user:<user> is a channel name; got {user:?}"
        ))
    }
}

/// How long a development token is valid unless asked otherwise (`make token`, the
/// banner's, the demo's).
pub const DEV_TOKEN_HOURS: u64 = 24;

/// What the demo app's `/demo/token?user=` answers with: for a user that
/// [`check_token_user`] accepts (its refusal names `?user=`), the token `deltacast-local token --user <user>` prints
/// ([`dev_token`], [`DEV_TOKEN_HOURS`]), signed with `secret`.
pub fn dev_tokens(secret: String) -> DevTokens {
    Arc::new(move |user: &str| {
        check_token_user(user, TOKEN_USER_FROM_DEMO)?;
        Ok(dev_token(
            &secret,
            user,
            Duration::from_secs(DEV_TOKEN_HOURS * 3600),
        ))
    })
}

/// A token for local development: every capability on every channel.
pub fn dev_token(secret: &str, sub: &str, valid_for: Duration) -> String {
    let claims = json!({
        "sub": sub,
        "exp": deltacast::clock::now_secs() + valid_for.as_secs(),
        "channels": {"*": ["subscribe", "publish", "history", "presence"]},
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("claims serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_user_must_be_a_channel_name_part() {
        for good in [
            "alice",
            "bob@example.com",
            "a.b-c_d:e",
            &"x".repeat(MAX_TOKEN_USER_LEN),
        ] {
            assert_eq!(
                check_token_user(good, TOKEN_USER_FROM_CLI),
                Ok(()),
                "{good}"
            );
        }
        for bad in [
            "",
            "bad user",
            "tab\tuser",
            "ünï",
            &"x".repeat(MAX_TOKEN_USER_LEN + 1),
        ] {
            let error = check_token_user(bad, TOKEN_USER_FROM_CLI).expect_err(bad);
            assert!(error.contains("--user, make token USER="), "{error}");
            assert!(error.contains("1 to 123 characters"), "{error}");
        }
    }

    #[test]
    fn a_refused_user_is_named_as_the_caller_took_it() {
        let error = check_token_user("bad user", TOKEN_USER_FROM_DEMO).expect_err("refused");
        assert!(
            error.starts_with("the user (?user= of /demo/token) must be"),
            "{error}"
        );
        assert!(!error.contains("--user"), "{error}");
    }
}
