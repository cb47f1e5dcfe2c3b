//! Applying objects that an admission webhook validates, when that webhook may not serve yet.
//!
//! A webhook's Deployment can be "available" before the webhook answers (MetalLB's controller is
//! ready on `/metrics`; its serving certificate and the webhook configuration's `caBundle` come
//! later: metallb/metallb#1540, #1597, #1612). The API server then refuses the object with a
//! `500 InternalError` whose message is `Internal error occurred: failed calling webhook
//! "<name>": failed to call webhook: Post "https://…": … connection refused` (the apiserver's
//! `ErrCallingWebhook`, `failed calling webhook %q: %v`, wrapped by `NewInternalError`; the text
//! as users quote it in metallb#1597). Istio's `common/scripts/kind_provisioner.sh`
//! (`install_metallb`) waits for every MetalLB pod to be Ready, then applies the pool, and its
//! `retry` helper runs the whole step at most 5 times, 5 s apart. meshfed does the same, more
//! narrowly: only that refusal by one of the named webhooks is retried; anything else fails at
//! once.

use std::time::Duration;

use serde_json::Value;

use super::apply::{Applied, ApplyError, ApplyMode, apply};

/// How many times an apply refused by a webhook that does not serve is tried (Istio's `retry`).
pub const WEBHOOK_ATTEMPTS: usize = 5;
/// The pause between two tries (Istio's `retry`).
pub const WEBHOOK_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Whether `error` is the API server failing to call one of `webhooks` (it does not serve yet).
pub fn is_webhook_not_serving(error: &ApplyError, webhooks: &[&str]) -> bool {
    let ApplyError::Api {
        source: kube::Error::Api(status),
        ..
    } = error
    else {
        return false;
    };
    status.code == 500
        && webhooks.iter().any(|webhook| {
            status
                .message
                .contains(&format!("failed calling webhook \"{webhook}\""))
        })
}

/// [`apply`], tried again (at most [`WEBHOOK_ATTEMPTS`] times, [`WEBHOOK_RETRY_PAUSE`] apart)
/// while the API server cannot call one of `webhooks`. The last refusal is returned, saying how
/// many tries were made.
pub async fn apply_when_webhooks_serve(
    client: &kube::Client,
    cluster: &str,
    scenario: &str,
    objects: &[Value],
    webhooks: &[&str],
) -> Result<Applied, WebhookApplyError> {
    let mut attempt = 1;
    loop {
        match apply(client, cluster, scenario, objects, ApplyMode::Apply).await {
            Err(error) if is_webhook_not_serving(&error, webhooks) => {
                if attempt == WEBHOOK_ATTEMPTS {
                    return Err(WebhookApplyError::NeverServed {
                        attempts: attempt,
                        source: error,
                    });
                }
                tracing::debug!("{error}; trying again in {} s", WEBHOOK_RETRY_PAUSE.as_secs());
                attempt += 1;
                tokio::time::sleep(WEBHOOK_RETRY_PAUSE).await;
            }
            Err(error) => return Err(WebhookApplyError::Apply(error)),
            Ok(applied) => return Ok(applied),
        }
    }
}

/// Why an apply through webhooks failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookApplyError {
    /// The webhook never served.
    #[error(
        "the admission webhook still did not serve after {attempts} tries {} s apart: {source}",
        WEBHOOK_RETRY_PAUSE.as_secs()
    )]
    NeverServed {
        /// Tries made.
        attempts: usize,
        /// The last refusal.
        #[source]
        source: ApplyError,
    },
    /// Any other failure (not retried).
    #[error(transparent)]
    Apply(ApplyError),
}
