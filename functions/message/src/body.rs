//! A frame's text. API Gateway hands a text frame's body over as it came, and a binary
//! frame's base64-encoded with `isBase64Encoded: true`. deltacast's frames are JSON text,
//! so a binary frame that carries UTF-8 is read exactly like a text frame; any other
//! binary frame is refused with a message that says what binary frames must carry.

use std::borrow::Cow;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine;
use deltacast::protocol::{ErrorCode, ErrorFrame};

/// The refusal of a binary frame that does not hold UTF-8 text.
pub const NOT_UTF8: &str = "binary frames must carry UTF-8 JSON, as text frames do";

/// The text of the frame `request` carries.
pub fn text(request: &ApiGatewayWebsocketProxyRequest) -> Result<Cow<'_, str>, ErrorFrame> {
    let body = request.body.as_deref().unwrap_or_default();
    if !request.is_base64_encoded {
        return Ok(Cow::Borrowed(body));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Cow::Owned)
        .ok_or_else(|| ErrorFrame::new(ErrorCode::BadRequest, NOT_UTF8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast_tests::events;

    fn request(body: &str, is_base64_encoded: bool) -> ApiGatewayWebsocketProxyRequest {
        let mut event = events::fixture("message-ping.json");
        event["body"] = body.into();
        event["isBase64Encoded"] = is_base64_encoded.into();
        serde_json::from_value(event).unwrap()
    }

    #[test]
    fn a_text_frame_is_read_as_it_came() {
        let request = request(r#"{"action":"ping"}"#, false);
        assert_eq!(text(&request).unwrap(), r#"{"action":"ping"}"#);
    }

    #[test]
    fn a_binary_frame_from_api_gateway_is_decoded_to_its_text() {
        let event = events::fixture("message-binary.json");
        let request: ApiGatewayWebsocketProxyRequest = serde_json::from_value(event).unwrap();
        assert!(request.is_base64_encoded);
        assert_eq!(text(&request).unwrap(), r#"{"action":"ping","id":"r1"}"#);
    }

    #[test]
    fn a_binary_frame_that_is_not_utf8_is_refused_with_what_it_must_carry() {
        let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, 0x00]);
        for request in [request(&not_utf8, true), request("not base64!", true)] {
            let refusal = text(&request).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::BadRequest);
            assert_eq!(
                refusal.message,
                "binary frames must carry UTF-8 JSON, as text frames do"
            );
        }
    }
}
