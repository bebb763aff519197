//! Where `fleetgate status` learns about hosts — each source is read through its own
//! crate, and the status model (`fleetgate-status`) merges them:
//!
//! - the server (`--server`): `GET /v1/status`, every page, with a read token — agent
//!   reports and manifests, already merged there;
//! - the deploy history (`--history`, by default the one `fleetgate deploy` writes),
//!   read-only through `fleetgate_deploy::history_query`;
//! - live facts (`--live`): one SSH round trip per host through `fleetgate-facts`, at
//!   most [`LIVE_PARALLEL`] at a time, each with a deadline; a host that cannot be reached
//!   is marked unreachable.
//!
//! `--publish` sends what was learnt as version-2 reports to a server, with each host's
//! report token: an agentless fleet (push deploys) can feed the dashboard this way.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleetgate_deploy::Inventory;
use fleetgate_deploy::history_query::{HistoryReadError, HistoryReader};
use fleetgate_facts::{Finding, Severity};
use fleetgate_status::merge::{DeployRecord, apply_deploy};
use fleetgate_status::report::{self, ReportV2, ReportedDesired, ReportedResult};
use fleetgate_status::{HostStatus, live};
use miette::{IntoDiagnostic as _, WrapErr as _, miette};

/// Hosts asked for live facts at once.
pub const LIVE_PARALLEL: usize = 8;
/// Runs of the history whose hosts are looked at when no flake names them.
const HISTORY_RUNS: usize = 50;
/// Largest answer read from the server (one page of 1000 hosts).
const MAX_ANSWER: u64 = 64 << 20;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .build()
        .into()
}

/// Every host the server knows, merged there from reports and manifests.
pub fn from_server(url: &str, token: &str, timeout: Duration) -> miette::Result<Vec<HostStatus>> {
    let agent = agent(timeout);
    let base = url.trim_end_matches('/');
    let mut hosts = Vec::new();
    loop {
        let page = format!("{base}/v1/status?detail=full&limit=1000&offset={}", hosts.len());
        let mut resp = agent
            .get(&page)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot reach the server at {base}"))?;
        let code = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(MAX_ANSWER).read_to_string().into_diagnostic()?;
        match code {
            200 => {}
            401 => return Err(miette!(help = "give a read token with --token-file", "the server refused the token")),
            _ => return Err(miette!("the server answered {code}: {}", body.chars().take(300).collect::<String>())),
        }
        let doc: serde_json::Value = serde_json::from_str(&body).into_diagnostic()?;
        let page_hosts: Vec<HostStatus> =
            serde_json::from_value(doc["hosts"].clone()).into_diagnostic().wrap_err("the server's status document")?;
        let matching = doc["matching"].as_u64().unwrap_or(0);
        let got = page_hosts.len();
        hosts.extend(page_hosts);
        if got == 0 || hosts.len() as u64 >= matching {
            return Ok(hosts);
        }
    }
}

/// Folds each host's newest deploy record into `hosts` (adding hosts the history knows
/// when `add_hosts`).
pub fn from_history(
    path: &Path,
    required: bool,
    hosts: &mut BTreeMap<String, HostStatus>,
    add_hosts: bool,
) -> miette::Result<()> {
    let reader = match HistoryReader::open(path) {
        Ok(r) => r,
        Err(HistoryReadError::Missing { .. }) if !required => return Ok(()),
        Err(e) => return Err(e).into_diagnostic(),
    };
    if add_hosts {
        for run in reader.runs(HISTORY_RUNS).into_diagnostic()? {
            for h in run.hosts {
                hosts.entry(h.clone()).or_insert_with(|| HostStatus::new(&h));
            }
        }
    }
    for (name, status) in hosts.iter_mut() {
        let Some((run, record)) = reader.host(name, 1).into_diagnostic()?.into_iter().next() else { continue };
        let findings = record
            .findings
            .iter()
            .map(|f| {
                let severity = match f.severity.as_str() {
                    "error" => Severity::Error,
                    "warning" => Severity::Warning,
                    _ => Severity::Info,
                };
                Finding::new(&f.id, severity, f.message.clone())
            })
            .collect();
        apply_deploy(
            status,
            &DeployRecord {
                at: i64::try_from(run.started_at).unwrap_or(i64::MAX),
                outcome: record.outcome,
                new_system: record.new_system,
                running_system: record.running_system,
                rolled_back: record.rolled_back,
                message: record.message,
                findings,
            },
        );
    }
    Ok(())
}

/// Reads live facts of the selected inventory hosts over SSH and folds them in; a host
/// that cannot be reached is marked unreachable now.
pub fn from_live(inventory: &Inventory, names: &[String], hosts: &mut BTreeMap<String, HostStatus>, timeout: Duration) {
    let now = now();
    let mut jobs: Vec<(String, fleetgate_transport::SshTarget, Vec<String>)> = Vec::new();
    for h in names.iter().filter_map(|n| inventory.hosts.get(n)) {
        match h.ssh_target() {
            Ok(target) => jobs.push((h.name.clone(), target, h.ssh_opts.clone())),
            // A target that cannot be parsed cannot be reached either.
            Err(e) => hosts
                .entry(h.name.clone())
                .or_insert_with(|| HostStatus::new(&h.name))
                .unreachable(now, &format!("its SSH target: {e}")),
        }
    }
    for chunk in jobs.chunks(LIVE_PARALLEL) {
        let results: Vec<(String, Result<fleetgate_facts::Facts, String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(name, target, opts)| {
                    s.spawn(move || {
                        // The parsed target itself: no round trip through its text.
                        let ssh = fleetgate_transport::Ssh::new(target.clone(), opts.clone());
                        let facts = fleetgate_facts::collect(&ssh, timeout).map_err(|e| e.to_string());
                        (name.clone(), facts)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (name, facts) in results {
            let status = hosts.entry(name.clone()).or_insert_with(|| HostStatus::new(&name));
            match facts {
                Ok(f) => live::apply_facts(status, &f, now),
                Err(why) => status.unreachable(now, &why),
            }
        }
    }
}

/// The version-2 report an agent on `h` would send, from what `status` learnt.
#[must_use]
pub fn as_report(h: &HostStatus) -> ReportV2 {
    let result = h.last_result.as_ref().map(|r| ReportedResult {
        outcome: r.outcome,
        at: r.at,
        system: r.system.clone(),
        commit: r.commit.clone(),
        message: r.message.as_ref().map(|m| m.chars().take(report::MAX_TEXT).collect()),
        findings: r.findings.iter().take(report::MAX_FINDINGS).cloned().collect(),
    });
    ReportV2 {
        v: report::VERSION,
        agent_version: format!("{}-agentless", env!("CARGO_PKG_VERSION")),
        time: now(),
        desired: h.desired.as_ref().map(|d| ReportedDesired {
            commit: d.commit.clone(),
            system: d.system.clone(),
            since: d.since,
        }),
        current: h.current.clone(),
        booted: h.booted.clone(),
        default: h.default.clone(),
        boot_debt: h.boot_debt.clone(),
        pending_reboot: h.pending_reboot.clone(),
        result,
        generations: h.generations.iter().rev().take(report::MAX_GENERATIONS).rev().cloned().collect(),
    }
}

/// Sends each host's report to `url` with its token from `tokens` (`<host> <token>`
/// lines); returns the hosts it could not publish, with why.
pub fn publish(
    url: &str,
    tokens: &str,
    hosts: &[HostStatus],
    timeout: Duration,
) -> miette::Result<Vec<(String, String)>> {
    let tokens: BTreeMap<&str, &str> = tokens
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(char::is_whitespace).map(|(h, t)| (h, t.trim())))
        .collect();
    let agent = agent(timeout);
    let base = url.trim_end_matches('/');
    let mut failed = Vec::new();
    for h in hosts {
        let Some(token) = tokens.get(h.host.as_str()).filter(|t| !t.starts_with("sha256:")) else {
            failed.push((h.host.clone(), "no plain token for it in --host-tokens-file".to_owned()));
            continue;
        };
        let body = serde_json::to_string(&as_report(h)).into_diagnostic()?;
        let sent = agent
            .post(&format!("{base}/v1/hosts/{}/report", h.host))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(&body);
        match sent {
            Ok(resp) if resp.status().as_u16() == 204 => {}
            Ok(mut resp) => {
                let code = resp.status().as_u16();
                let text = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
                failed.push((h.host.clone(), format!("the server answered {code}: {text}")));
            }
            Err(e) => failed.push((h.host.clone(), e.to_string())),
        }
    }
    Ok(failed)
}

/// Unix seconds now.
#[must_use]
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
