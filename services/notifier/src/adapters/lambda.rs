//! The Lambda enrichment hook through aws-sdk-lambda (`RequestResponse` invocations). The SDK's
//! own retries are off: a throttled or slow hook must not hold a notification back, so every
//! failure falls back to the built-in message at once and is counted.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_credential_types::Credentials;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::timeout::TimeoutConfig;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use crate::config::LambdaConfig;
use crate::domain::hook::{HookOutcome, interpret};
use crate::domain::text::truncate;

const FALLBACK_REGION: &str = "us-east-1";

/// A configured hook.
#[derive(Debug, Clone)]
pub struct LambdaHook {
    client: aws_sdk_lambda::Client,
    function: String,
    timeout: Duration,
    users: BTreeMap<String, String>,
}

impl LambdaHook {
    /// Builds the client; contacts nothing. `users` resolves a destination the hook names.
    pub async fn new(config: &LambdaConfig, users: BTreeMap<String, String>) -> LambdaHook {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        loader = match &config.region {
            Some(region) => loader.region(aws_config::Region::new(region.clone())),
            None => loader.region(
                RegionProviderChain::default_provider().or_else(aws_config::Region::from_static(FALLBACK_REGION)),
            ),
        };
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(key, secret, None, None, "aloft-notifier-config"));
        }
        if let Some(endpoint) = &config.endpoint_url {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let lambda = aws_sdk_lambda::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(config.timeout).build())
            .build();
        LambdaHook {
            client: aws_sdk_lambda::Client::from_conf(lambda),
            function: config.function.clone(),
            timeout: config.timeout,
            users,
        }
    }

    /// Invokes the function with `payload` (the hook request JSON) and reads its answer.
    pub async fn invoke(&self, payload: Vec<u8>) -> HookOutcome {
        let call = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .send();
        // The SDK's operation timeout covers the call; this bound also covers credential and
        // endpoint resolution, so a hook can never stall a notification.
        let result = match tokio::time::timeout(self.timeout + Duration::from_millis(500), call).await {
            Err(_) => return HookOutcome::Timeout,
            Ok(r) => r,
        };
        match result {
            Ok(out) => {
                let body = out.payload().map(|b| b.as_ref().to_vec()).unwrap_or_default();
                if let Some(kind) = out.function_error() {
                    let text = String::from_utf8_lossy(&body);
                    return HookOutcome::FunctionError(truncate(&format!("{kind}: {}", text.trim()), 500));
                }
                if out.status_code() != 200 {
                    return HookOutcome::Error(format!("invoke answered status {}", out.status_code()));
                }
                interpret(&body, &self.users)
            }
            Err(SdkError::TimeoutError(_)) => HookOutcome::Timeout,
            Err(SdkError::DispatchFailure(d)) if d.is_timeout() => HookOutcome::Timeout,
            Err(e) => {
                let service = e.into_service_error();
                if service.is_too_many_requests_exception() {
                    HookOutcome::Throttled
                } else {
                    HookOutcome::Error(truncate(&aws_error_text(&service), 500))
                }
            }
        }
    }
}

fn aws_error_text(e: &aws_sdk_lambda::operation::invoke::InvokeError) -> String {
    use aws_sdk_lambda::error::ProvideErrorMetadata;
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}
