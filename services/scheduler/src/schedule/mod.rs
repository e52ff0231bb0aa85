//! Launch-plan schedules: cron (five fields, @-aliases, an ISO-8601 offset) and fixed rate, for
//! ACTIVE launch plans, fired as SCHEDULED executions through metadata's CreateExecution.
//!
//! The core is pure and takes the time as an argument: [`cron`] and [`cadence`] say when a
//! schedule fires, [`due`] which times to fire now under the catch-up policy, [`fire`] what a
//! firing is (deterministic execution name, request, progress record). [`runner`] is the shell:
//! it lists the schedules from metadata, creates executions and keeps progress in a JetStream
//! key-value bucket. The decision record is docs/adr/0010-schedules.md.

pub mod cadence;
pub mod calendar;
pub mod cron;
pub mod due;
pub mod fire;
pub mod runner;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use aloft_bus::Bus;
use aloft_proto::flyteidl::service::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

pub use cadence::{Cadence, ScheduleError, ScheduleSpec};
pub use due::{CatchUp, Due, Policy};
pub use runner::{Pass, RunError, Runner};

use crate::config::SchedulesConfig;

/// The bucket (`<stream_prefix>_schedules`) holding each launch-plan version's progress.
pub const BUCKET: &str = "schedules";

/// Where the schedule loop reads the time; tests drive it by hand.
pub trait Clock: Send + Sync {
    /// Now, in Unix seconds.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}

/// A clock that only moves when told to; shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `now` (Unix seconds).
    pub fn at(now: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(now)))
    }

    /// Moves the clock by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A runner for `config`: opens the progress bucket on `bus`; `admin` is the shared lazy channel
/// to metadata (it may start after the scheduler; passes fail and retry until it answers).
pub async fn connect(
    config: &SchedulesConfig,
    bus: &Bus,
    admin: AdminServiceClient<Channel>,
    clock: Arc<dyn Clock>,
) -> Result<Runner, crate::Error> {
    let progress = bus.kv_bucket(BUCKET).await?;
    Ok(Runner::new(admin, progress, config, clock))
}
