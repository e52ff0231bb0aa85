//! Admission of task attempts against the executor's CPU and memory capacity.
//!
//! First come, first served: an attempt that does not fit waits, and nothing behind it is admitted
//! before it (otherwise a stream of small tasks could starve a large one forever). An attempt
//! asking for more than the whole capacity can never run here and is refused at once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use aloft_proto::flyteidl::core::Resources as ResourceSpec;
use aloft_proto::flyteidl::core::resources::ResourceName;

use super::SpecError;
use super::quantity::{cpu_millis, format_cpu, format_memory, memory_bytes};

/// CPU and memory, in millicores and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

impl Resources {
    fn fits_in(self, free: Resources) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes
    }

    fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    fn minus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu {}, memory {}", format_cpu(self.cpu_millis), format_memory(self.memory_bytes))
    }
}

/// What an attempt needs: its container's CPU and memory requests, each falling back to the
/// limit when only a limit is given (Kubernetes' defaulting), zero when neither is. Other
/// resources (GPU, storage) are not admitted here.
pub fn requested(spec: Option<&ResourceSpec>) -> Result<Resources, SpecError> {
    let Some(spec) = spec else { return Ok(Resources::default()) };
    let pick = |name: ResourceName| {
        let find = |entries: &[aloft_proto::flyteidl::core::resources::ResourceEntry]| {
            entries.iter().rev().find(|e| e.name == name as i32 && !e.value.trim().is_empty()).map(|e| e.value.clone())
        };
        find(&spec.requests).or_else(|| find(&spec.limits))
    };
    let cpu = match pick(ResourceName::Cpu) {
        Some(v) => cpu_millis(&v).map_err(|e| e.context("cpu request"))?,
        None => 0,
    };
    let memory = match pick(ResourceName::Memory) {
        Some(v) => memory_bytes(&v).map_err(|e| e.context("memory request"))?,
        None => 0,
    };
    Ok(Resources { cpu_millis: cpu, memory_bytes: memory })
}

/// The outcome of asking for resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Admitted now; call [`Admission::release`] when done.
    Admitted,
    /// Queued; [`Admission::release`] of others reports it once admitted.
    Waiting,
    /// Larger than the whole capacity: it can never run on this executor.
    TooLarge(String),
}

/// The ledger of used capacity and the queue of attempts waiting for it.
#[derive(Debug)]
pub struct Admission<K> {
    capacity: Resources,
    used: Resources,
    admitted: HashMap<K, Resources>,
    waiting: VecDeque<(K, Resources)>,
}

impl<K: Eq + Hash + Clone> Admission<K> {
    /// An empty ledger over `capacity`.
    pub fn new(capacity: Resources) -> Self {
        Admission { capacity, used: Resources::default(), admitted: HashMap::new(), waiting: VecDeque::new() }
    }

    /// Asks for `need` on behalf of `key`. Admitted only when it fits now and nobody waits ahead.
    /// Asking again for a key already admitted or waiting changes nothing.
    pub fn request(&mut self, key: K, need: Resources) -> Request {
        if need.cpu_millis > self.capacity.cpu_millis || need.memory_bytes > self.capacity.memory_bytes {
            return Request::TooLarge(format!(
                "the task requests {need} but this executor's whole capacity is {}",
                self.capacity
            ));
        }
        if self.admitted.contains_key(&key) {
            return Request::Admitted;
        }
        if self.waiting.iter().any(|(k, _)| *k == key) {
            return Request::Waiting;
        }
        if self.waiting.is_empty() && need.fits_in(self.free()) {
            self.admit(key, need);
            Request::Admitted
        } else {
            self.waiting.push_back((key, need));
            Request::Waiting
        }
    }

    /// Frees what `key` holds, or takes it out of the queue if it was still waiting, then admits
    /// waiting attempts from the head of the queue while they fit. Returns the keys admitted now.
    pub fn release(&mut self, key: &K) -> Vec<K> {
        if let Some(held) = self.admitted.remove(key) {
            self.used = self.used.minus(held);
        } else {
            self.waiting.retain(|(k, _)| k != key);
        }
        let mut admitted = Vec::new();
        while let Some((_, need)) = self.waiting.front() {
            if !need.fits_in(self.free()) {
                break;
            }
            let (k, need) = self.waiting.pop_front().expect("front exists");
            self.admit(k.clone(), need);
            admitted.push(k);
        }
        admitted
    }

    /// Capacity not held by admitted attempts.
    pub fn free(&self) -> Resources {
        self.capacity.minus(self.used)
    }

    /// How many attempts wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn admit(&mut self, key: K, need: Resources) {
        self.used = self.used.plus(need);
        self.admitted.insert(key, need);
    }
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::resources::ResourceEntry;
    use proptest::prelude::*;

    use super::*;

    fn res(cpu: u64, mem: u64) -> Resources {
        Resources { cpu_millis: cpu, memory_bytes: mem }
    }

    fn entry(name: ResourceName, value: &str) -> ResourceEntry {
        ResourceEntry { name: name as i32, value: value.into() }
    }

    #[test]
    fn requests_fall_back_to_limits() {
        let spec = ResourceSpec {
            requests: vec![entry(ResourceName::Cpu, "500m"), entry(ResourceName::Gpu, "1")],
            limits: vec![entry(ResourceName::Cpu, "2"), entry(ResourceName::Memory, "1Gi")],
        };
        assert_eq!(requested(Some(&spec)).unwrap(), res(500, 1 << 30));
        assert_eq!(requested(None).unwrap(), res(0, 0));
        assert_eq!(requested(Some(&ResourceSpec::default())).unwrap(), res(0, 0));
        let bad = ResourceSpec { requests: vec![entry(ResourceName::Memory, "lots")], limits: vec![] };
        assert_eq!(
            requested(Some(&bad)).unwrap_err().to_string(),
            "memory request: `lots` is not a resource quantity: no digits"
        );
    }

    #[test]
    fn too_large_is_refused_with_both_sides() {
        let mut a = Admission::new(res(2000, 4 << 30));
        assert_eq!(
            a.request("big", res(4000, 1 << 30)),
            Request::TooLarge(
                "the task requests cpu 4, memory 1Gi but this executor's whole capacity is cpu 2, memory 4Gi".into()
            )
        );
        assert_eq!(a.free(), res(2000, 4 << 30));
    }

    #[test]
    fn waits_in_order_and_admits_on_release() {
        let mut a = Admission::new(res(2000, 1000));
        assert_eq!(a.request("a", res(1500, 100)), Request::Admitted);
        assert_eq!(a.request("b", res(1000, 100)), Request::Waiting);
        // c would fit, but b is ahead of it
        assert_eq!(a.request("c", res(500, 100)), Request::Waiting);
        assert_eq!(a.request("b", res(1000, 100)), Request::Waiting, "asking twice changes nothing");
        assert_eq!(a.waiting(), 2);
        assert_eq!(a.release(&"a"), vec!["b", "c"]);
        assert_eq!(a.free(), res(500, 800));
        assert_eq!(a.release(&"a"), Vec::<&str>::new(), "releasing twice changes nothing");
        assert_eq!(a.free(), res(500, 800));
    }

    #[test]
    fn a_cancelled_waiter_unblocks_the_queue() {
        let mut a = Admission::new(res(1000, 1000));
        assert_eq!(a.request("a", res(600, 0)), Request::Admitted);
        assert_eq!(a.request("big", res(1000, 0)), Request::Waiting);
        assert_eq!(a.request("small", res(400, 0)), Request::Waiting);
        assert_eq!(a.release(&"big"), vec!["small"]);
        assert_eq!(a.free(), res(0, 1000));
    }

    #[test]
    fn zero_requests_always_fit() {
        let mut a = Admission::new(res(0, 0));
        assert_eq!(a.request(1, res(0, 0)), Request::Admitted);
        assert_eq!(a.request(2, res(0, 0)), Request::Admitted);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request(u8, u64, u64),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u64..1500, 0u64..1500).prop_map(|(k, c, m)| Op::Request(k, c, m)),
            (0u8..12).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Whatever the sequence, admitted attempts never exceed the capacity, the ledger adds
        /// up, and a waiting queue is never left idle while its head fits.
        #[test]
        fn never_overcommits(ops in proptest::collection::vec(op(), 0..80)) {
            let cap = res(2000, 2000);
            let mut a = Admission::new(cap);
            for op in ops {
                match op {
                    Op::Request(k, c, m) => { a.request(k, res(c, m)); }
                    Op::Release(k) => { a.release(&k); }
                }
                let sum = a.admitted.values().fold(Resources::default(), |acc, r| acc.plus(*r));
                prop_assert_eq!(sum, a.used);
                prop_assert!(a.used.fits_in(cap));
                if let Some((_, head)) = a.waiting.front() {
                    prop_assert!(!head.fits_in(a.free()));
                }
                for (k, _) in &a.waiting {
                    prop_assert!(!a.admitted.contains_key(k));
                }
            }
        }
    }
}
