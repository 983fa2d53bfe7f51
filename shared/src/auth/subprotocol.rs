//! The WebSocket subprotocol handshake: deltacast speaks `deltacast.v1`, and a browser,
//! which cannot set an `Authorization` header, may carry its token as a second offered
//! subprotocol, `bearer.<JWT>`. The authorizer and `$connect` both read the offer here.

/// The subprotocol deltacast speaks; `$connect` answers with it when the client offers it.
pub const SUBPROTOCOL: &str = "deltacast.v1";
/// The prefix of the subprotocol entry that carries a browser's token: `bearer.<JWT>`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The entries a handshake offers in its `Sec-WebSocket-Protocol` headers, in order
/// (a header may list several, comma-separated).
pub fn offered_subprotocols(
    headers: &aws_lambda_events::http::HeaderMap,
) -> impl Iterator<Item = &str> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}
