//! `aloft.v1.NotifierService`: decode and validate -> store -> encode. No business logic here.

use aloft_proto::aloft::v1::notifier_service_server::NotifierService;
use aloft_proto::aloft::v1::{
    ListDeliveriesRequest, ListDeliveriesResponse, NotificationAttempt, NotificationDelivery,
};
use aloft_proto::flyteidl::core::WorkflowExecutionIdentifier;
use tonic::{Request, Response, Status};

use crate::adapters::store::Store;

/// The query API over the delivery records.
#[derive(Debug, Clone)]
pub struct Notifier(pub Store);

fn timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    (micros > 0).then(|| prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    })
}

#[tonic::async_trait]
impl NotifierService for Notifier {
    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let id = request
            .into_inner()
            .execution_id
            .ok_or_else(|| Status::invalid_argument("ListDeliveries: execution_id is missing"))?;
        for (field, value) in [("project", &id.project), ("domain", &id.domain), ("name", &id.name)] {
            if value.is_empty() {
                return Err(Status::invalid_argument(format!("ListDeliveries: execution_id.{field} is empty")));
            }
        }
        let records = self.0.list(&id.project, &id.domain, &id.name).await.map_err(|e| {
            tracing::error!(error = %e, "cannot list deliveries");
            Status::internal(format!("cannot read deliveries: {e}"))
        })?;
        let deliveries = records
            .into_iter()
            .map(|r| NotificationDelivery {
                execution_id: Some(WorkflowExecutionIdentifier {
                    project: r.project,
                    domain: r.domain,
                    name: r.execution,
                    org: String::new(),
                }),
                phase: r.phase,
                destination: r.destination,
                target: r.target,
                state: r.state,
                hook: r.hook,
                attempts: r.attempts,
                last_error: r.last_error,
                slack_ts: r.slack_ts,
                created_at: timestamp(r.created_at),
                updated_at: timestamp(r.updated_at),
                payload: r.payload,
                attempt_log: r
                    .attempt_log
                    .into_iter()
                    .map(|a| NotificationAttempt {
                        attempt: a.attempt,
                        replica: a.replica,
                        started_at: timestamp(a.started_at),
                        finished_at: timestamp(a.finished_at),
                        outcome: a.outcome,
                        http_status: i32::from(a.http_status),
                        detail: a.detail,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListDeliveriesResponse { deliveries }))
    }
}
