//! The configurations of one key, in the order they run: their names, what
//! signs in each, and with how many workers and requests.

use super::raw::AfterSign;
use super::{Audit, Plan, Transport};

/// The gRPC method that the clients of a service configuration call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// One digest per call.
    Sign,
    /// `Plan::batch_size` digests per call.
    SignBatch,
    /// A `grpc.health.v1.Health/Check` call, which signs nothing: the cost
    /// of a unary gRPC call on its own.
    HealthCheck,
}

impl Rpc {
    /// Returns the method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sign => "Sign",
            Self::SignBatch => "SignBatch",
            Self::HealthCheck => "Health/Check",
        }
    }
}

/// The part of the report that a configuration belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Many workers, for throughput: `plan.requests` digests, and the
    /// service's pool of sessions or `plan.clients` clients.
    Throughput,
    /// One worker, for latency: `plan.latency_requests` digests.
    SingleClient,
}

impl Part {
    /// Returns the name used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::SingleClient => "single-client",
        }
    }
}

/// The signer of a configuration: the bench itself, or a service child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `C_Sign` in the bench process, one thread per session.
    Raw(AfterSign),
    /// A `hallmark serve` child process, called by gRPC clients.
    Service(ServiceSetup),
}

/// The transport, audit setting and method of a service configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSetup {
    /// The connection between the clients and the service.
    pub transport: Transport,
    /// The service's audit log.
    pub audit: Audit,
    /// The method that the clients call.
    pub rpc: Rpc,
}

/// One configuration of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The name in the report.
    pub name: String,
    /// The part of the report.
    pub part: Part,
    /// What signs.
    pub kind: Kind,
    /// Raw threads (one session each), or concurrent gRPC clients.
    pub workers: usize,
    /// Digests to sign, the first ones of the key's digests.
    pub requests: usize,
}

/// The single-client service configurations, in the order they run.
const SINGLE_CLIENT: [(Transport, Audit); 3] = [
    (Transport::Unix, Audit::Off),
    (Transport::Unix, Audit::On),
    (Transport::Tcp, Audit::Off),
];

/// Lists the configurations of one key, for a service pool of `sessions`.
///
/// First the throughput configurations, with `plan.requests` digests each:
/// `raw` and `raw-checked` on `sessions` threads, then the service with
/// Sign (`TRANSPORT-audit-AUDIT`) and with SignBatch
/// (`TRANSPORT-batch-audit-AUDIT`) from `plan.clients` clients. Then the
/// single-client configurations, with `plan.latency_requests` digests:
/// `raw-1` on one thread, and `unix-1-audit-off`, `unix-1-audit-on` and
/// `tcp-1-audit-off` with one client, and last `unix-1-health-check`, one
/// client's health checks, which sign nothing. Service configurations run
/// only for the audit settings in `plan.audit`; the health checks run with
/// the audit log off unless only `on` is planned.
pub fn configurations(plan: &Plan, sessions: usize) -> Vec<Spec> {
    let sized = |part| match part {
        Part::Throughput => (sessions, plan.clients, plan.requests),
        Part::SingleClient => (1, 1, plan.latency_requests),
    };
    let raw = |name: &str, after, part| {
        let (threads, _, requests) = sized(part);
        Spec {
            name: name.to_owned(),
            part,
            kind: Kind::Raw(after),
            workers: threads,
            requests,
        }
    };
    let service = |infix: &str, (transport, audit): (Transport, Audit), rpc, part| {
        let (_, clients, requests) = sized(part);
        Spec {
            name: format!("{}{infix}-audit-{}", transport.as_str(), audit.as_str()),
            part,
            kind: Kind::Service(ServiceSetup {
                transport,
                audit,
                rpc,
            }),
            workers: clients,
            requests,
        }
    };

    let mut specs = vec![
        raw("raw", AfterSign::Nothing, Part::Throughput),
        raw("raw-checked", AfterSign::SelfCheck, Part::Throughput),
    ];
    for (infix, rpc) in [("", Rpc::Sign), ("-batch", Rpc::SignBatch)] {
        for transport in [Transport::Tcp, Transport::Unix] {
            for &audit in &plan.audit {
                specs.push(service(infix, (transport, audit), rpc, Part::Throughput));
            }
        }
    }
    specs.push(raw("raw-1", AfterSign::Nothing, Part::SingleClient));
    for (transport, audit) in SINGLE_CLIENT {
        if plan.audit.contains(&audit) {
            specs.push(service(
                "-1",
                (transport, audit),
                Rpc::Sign,
                Part::SingleClient,
            ));
        }
    }
    let floor_audit = if plan.audit.contains(&Audit::Off) {
        Audit::Off
    } else {
        Audit::On
    };
    let mut floor = service(
        "-1",
        (Transport::Unix, floor_audit),
        Rpc::HealthCheck,
        Part::SingleClient,
    );
    floor.name = HEALTH_CHECK.to_owned();
    specs.push(floor);
    specs
}

/// The name of the configuration that makes health checks instead of
/// signing.
pub const HEALTH_CHECK: &str = "unix-1-health-check";

/// Returns a plan of 1000 digests per throughput configuration, 300 per
/// single-client configuration, 4 clients and batches of 64, for tests.
#[cfg(test)]
pub fn test_plan(audit: Vec<Audit>) -> Plan {
    Plan {
        exe: std::path::PathBuf::from("hallmark"),
        config_path: std::path::PathBuf::from("hallmark.toml"),
        keys: Vec::new(),
        requests: 1000,
        latency_requests: 300,
        clients: 4,
        batch_size: 64,
        audit,
        command: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(audit: Vec<Audit>) -> Plan {
        test_plan(audit)
    }

    fn names(specs: &[Spec]) -> Vec<&str> {
        specs.iter().map(|spec| spec.name.as_str()).collect()
    }

    #[test]
    fn both_audit_settings_give_every_configuration() {
        let specs = configurations(&plan(vec![Audit::On, Audit::Off]), 2);
        assert_eq!(
            names(&specs),
            [
                "raw",
                "raw-checked",
                "tcp-audit-on",
                "tcp-audit-off",
                "unix-audit-on",
                "unix-audit-off",
                "tcp-batch-audit-on",
                "tcp-batch-audit-off",
                "unix-batch-audit-on",
                "unix-batch-audit-off",
                "raw-1",
                "unix-1-audit-off",
                "unix-1-audit-on",
                "tcp-1-audit-off",
                "unix-1-health-check",
            ]
        );

        assert_eq!(specs[1].kind, Kind::Raw(AfterSign::SelfCheck));
        assert_eq!((specs[1].workers, specs[1].requests), (2, 1000));
        assert_eq!(
            specs[7].kind,
            Kind::Service(ServiceSetup {
                transport: Transport::Tcp,
                audit: Audit::Off,
                rpc: Rpc::SignBatch
            })
        );
        assert_eq!((specs[7].workers, specs[7].requests), (4, 1000));

        assert_eq!(specs[9].part, Part::Throughput);
        assert_eq!(specs[10].part, Part::SingleClient);
        assert_eq!(specs[10].kind, Kind::Raw(AfterSign::Nothing));
        assert_eq!((specs[10].workers, specs[10].requests), (1, 300));
        assert_eq!(
            specs[13].kind,
            Kind::Service(ServiceSetup {
                transport: Transport::Tcp,
                audit: Audit::Off,
                rpc: Rpc::Sign
            })
        );
        assert_eq!((specs[13].workers, specs[13].requests), (1, 300));
        assert_eq!(
            specs[14].kind,
            Kind::Service(ServiceSetup {
                transport: Transport::Unix,
                audit: Audit::Off,
                rpc: Rpc::HealthCheck
            })
        );
        assert_eq!((specs[14].workers, specs[14].requests), (1, 300));
    }

    #[test]
    fn one_audit_setting_limits_the_service_configurations() {
        let on = configurations(&plan(vec![Audit::On]), 2);
        assert_eq!(
            names(&on),
            [
                "raw",
                "raw-checked",
                "tcp-audit-on",
                "unix-audit-on",
                "tcp-batch-audit-on",
                "unix-batch-audit-on",
                "raw-1",
                "unix-1-audit-on",
                "unix-1-health-check",
            ]
        );
        assert_eq!(
            on.last().map(|spec| spec.kind),
            Some(Kind::Service(ServiceSetup {
                transport: Transport::Unix,
                audit: Audit::On,
                rpc: Rpc::HealthCheck
            }))
        );
        let off = configurations(&plan(vec![Audit::Off]), 2);
        assert_eq!(
            names(&off),
            [
                "raw",
                "raw-checked",
                "tcp-audit-off",
                "unix-audit-off",
                "tcp-batch-audit-off",
                "unix-batch-audit-off",
                "raw-1",
                "unix-1-audit-off",
                "tcp-1-audit-off",
                "unix-1-health-check",
            ]
        );
    }
}
