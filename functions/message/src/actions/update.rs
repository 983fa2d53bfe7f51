//! `update`: stores a state channel's ops, exactly once per `(channel, publisher, id)`,
//! as one op item in one of the channel's op shards, and answers `updated` (with
//! `duplicate` when the id was stored before). The fold (the sequencer) applies them to
//! the document; ops it cannot apply there (an `inc` of a string, the document's size
//! limit) are answered then, with an `error` frame carrying the id.

use deltacast::auth::Action;
use deltacast::clock;
use deltacast::cost;
use deltacast::metrics::{self, UpdateOutcome};
use deltacast::protocol::{Channel, MessageId, ServerMessage};
use deltacast::push::Push;
use deltacast::state::Op;
use deltacast::store::{NewOps, OpsStored};

use super::{ActionError, authorize, rate, send, state_channel};
use crate::context::{App, Sender};

/// The fields of an `update` frame.
pub struct Args<'a> {
    /// The state channel.
    pub channel: &'a Channel,
    /// The message id: the idempotency key, echoed in the answer.
    pub id: &'a MessageId,
    /// The ops, checked.
    pub ops: &'a [Op],
}

/// Stores `args.ops` for the fold and answers `updated`; counted by outcome
/// (`StateUpdates`).
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let result = update(args, sender, app, push).await;
    if let Some(code) = result.as_ref().err().and_then(ActionError::code) {
        metrics::state_update(UpdateOutcome::Refused(code));
    }
    result
}

async fn update<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args { channel, id, ops } = args;
    authorize(sender, Action::Publish, channel)?;
    state_channel(app, channel, "update")?;
    rate::admit(sender, app, cost::REQUEST).await?;
    let state = &app.settings.state;
    let ops = serde_json::to_string(ops).expect("ops always serialise");
    let ttl = state.op_ttl.map(|ttl| clock::now_secs() + ttl.as_secs());
    let stored = app
        .store
        .put_ops(
            NewOps {
                channel: channel.as_str(),
                id: id.as_str(),
                from: &sender.identity.sub,
                ops: &ops,
                at: sender.received_at,
                conn: sender.connection_id,
            },
            state.shards,
            ttl,
        )
        .await?;
    metrics::state_update(if stored == OpsStored::Duplicate {
        UpdateOutcome::Duplicate
    } else {
        UpdateOutcome::Ok
    });
    send(
        push,
        sender,
        &ServerMessage::Updated {
            channel,
            id,
            duplicate: stored == OpsStored::Duplicate,
        },
    )
    .await
}
