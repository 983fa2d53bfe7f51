//! What every invocation shares, built once at init: the actions' [`App`] (store,
//! settings), the JWT verifier and the http function's own settings.

use deltacast::auth::JwtVerifier;
use deltacast_message::context::App;

use crate::settings::HttpSettings;

/// The function's state, shared by every invocation (and each event stream's task).
pub struct Service {
    /// The store and the settings the socket's actions use.
    pub app: App,
    /// Verifies bearer tokens as the `$connect` authorizer does.
    pub verifier: JwtVerifier,
    /// How publishes wait and streams behave.
    pub settings: HttpSettings,
}
