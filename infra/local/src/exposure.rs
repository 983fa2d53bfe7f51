//! Who can reach the local stack. Its development secret is in the source, so anyone who
//! can reach a stack that verifies tokens with it can sign a token for any user with every
//! capability. Listening on loopback keeps that to this machine; listening anywhere else
//! (`make dev BIND=0.0.0.0`, for phones on the LAN) is refused until the secret is one of
//! the developer's own. The unsigned Management API is kept to this machine separately,
//! by the gateway (see `gateway::management`).

use std::net::IpAddr;

/// The stack would publish its development secret to the network.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "refusing to listen on {bind} with the development JWT secret: it is in deltacast's \
     source, so anyone who can reach {bind} could sign tokens for any user with every \
     capability. Set JWT_SECRET (or --parameter JwtSecret=...) to a secret of your own, at \
     least 32 bytes (e.g. JWT_SECRET=$(openssl rand -hex 32)), or listen on 127.0.0.1"
)]
pub struct DevSecretOnNetwork {
    /// The address it was asked to listen on.
    pub bind: IpAddr,
}

/// Refuses a non-loopback `bind` while tokens are verified with the development secret
/// (`dev_secret_in_use`: HS256 with `DEV_JWT_SECRET`, see
/// `StackOptions::uses_dev_secret`). Key-set stacks (RS256/ES256) and secrets of one's
/// own may listen anywhere.
pub fn check_bind(bind: IpAddr, dev_secret_in_use: bool) -> Result<(), DevSecretOnNetwork> {
    if dev_secret_in_use && !bind.to_canonical().is_loopback() {
        Err(DevSecretOnNetwork { bind })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn the_development_secret_is_refused_on_any_non_loopback_address() {
        for bind in ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "fe80::1"] {
            let refused = check_bind(ip(bind), true).expect_err(bind);
            assert_eq!(refused.bind, ip(bind));
            let message = refused.to_string();
            assert!(message.contains("Set JWT_SECRET"), "{message}");
            assert!(message.contains("at least 32 bytes"), "{message}");
        }
    }

    #[test]
    fn the_development_secret_is_fine_on_loopback() {
        for bind in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(check_bind(ip(bind), true), Ok(()), "{bind}");
        }
    }

    #[test]
    fn any_other_secret_or_a_key_set_may_listen_anywhere() {
        for bind in ["0.0.0.0", "::", "192.168.1.20"] {
            assert_eq!(check_bind(ip(bind), false), Ok(()), "{bind}");
        }
    }
}
