//! `$HYDRA_JSON`, as written by Hydra's `Hydra::Plugin::RunCommand::makeJsonPayload`.
//!
//! Field names and nullability follow Hydra's code: `event`, `build`, `finished`
//! (boolean), `timestamp`, `project`, `jobset`, `job`, `drvPath`, `startTime`,
//! `stopTime`, `buildStatus`, `nixName`, `system`, `homepage`, `description`, `license`,
//! `outputs` (`name`, `path`), `products` (`productNr`, `type`, `subtype`, `fileSize`,
//! `sha256hash`, `path`, `name`, `defaultPath`) and `metrics` (`name`, `unit`, `value`).
//! Unknown fields are accepted (newer Hydras may add some).
use serde::Deserialize;

use crate::error::ChannelError;

/// Largest event file read (8 MiB). Hydra's payload is a few KiB: the build, its
/// outputs, products and metrics.
pub const MAX_EVENT: u64 = 8 << 20;

/// One RunCommand event.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HydraEvent {
    /// `buildFinished` (the only event RunCommand sends today).
    pub event: String,
    /// The build id.
    pub build: u64,
    /// Whether the build is finished.
    pub finished: bool,
    /// When the build was queued (Unix seconds).
    pub timestamp: Option<i64>,
    /// Project name.
    pub project: String,
    /// Jobset name.
    pub jobset: String,
    /// Job name (`nixos-web1.x86_64-linux`).
    pub job: String,
    /// The derivation.
    pub drv_path: Option<String>,
    /// Build start (Unix seconds), null if it never started.
    pub start_time: Option<i64>,
    /// Build stop (Unix seconds).
    pub stop_time: Option<i64>,
    /// Hydra's build status code; null while unfinished.
    pub build_status: Option<i64>,
    /// The derivation's name.
    pub nix_name: Option<String>,
    /// The platform (`x86_64-linux`).
    pub system: Option<String>,
    /// `meta.homepage`.
    pub homepage: Option<String>,
    /// `meta.description`.
    pub description: Option<String>,
    /// `meta.license`.
    pub license: Option<String>,
    /// Build outputs.
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// Build products.
    #[serde(default)]
    pub products: Vec<Product>,
    /// Build metrics.
    #[serde(default)]
    pub metrics: Vec<Metric>,
}

/// One output of the build.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Output {
    /// Output name (`out`).
    pub name: String,
    /// Store path.
    pub path: String,
}

/// One build product (`nix-support/hydra-build-products`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// Product number.
    pub product_nr: i64,
    /// Type (`nix-build`, `file`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Subtype (output name for `nix-build` products; may be empty).
    pub subtype: String,
    /// File size, null for `nix-build` products.
    pub file_size: Option<u64>,
    /// SHA-256 of the file, null for `nix-build` products.
    pub sha256hash: Option<String>,
    /// Path.
    pub path: String,
    /// Name.
    pub name: String,
    /// Default path (may be empty).
    pub default_path: Option<String>,
}

/// One build metric.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Metric {
    /// Metric name.
    pub name: String,
    /// Unit (may be null).
    pub unit: Option<String>,
    /// Value (Hydra writes `0 + value`, a number).
    pub value: f64,
}

/// Hydra's build status codes (`Builds.buildstatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildStatus {
    /// 0: succeeded.
    Succeeded,
    /// 1: the builder failed.
    Failed,
    /// 2: a dependency failed.
    DependencyFailed,
    /// 3: aborted (miscellaneous failure).
    Aborted,
    /// 4: cancelled (never built).
    Cancelled,
    /// 5: obsolete code, no longer written.
    Obsolete,
    /// 6: failed with output (`nix-support/failed`).
    FailedWithOutput,
    /// 7: timed out.
    TimedOut,
    /// 8: cached failure (build steps only).
    CachedFailure,
    /// 9: unsupported system type.
    Unsupported,
    /// 10: log limit exceeded.
    LogLimitExceeded,
    /// 11: NAR size limit exceeded.
    NarSizeLimitExceeded,
    /// 12: not deterministic.
    NotDeterministic,
    /// Anything else a newer Hydra might write.
    Unknown(i64),
}

impl BuildStatus {
    /// From Hydra's integer code.
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Succeeded,
            1 => Self::Failed,
            2 => Self::DependencyFailed,
            3 => Self::Aborted,
            4 => Self::Cancelled,
            5 => Self::Obsolete,
            6 => Self::FailedWithOutput,
            7 => Self::TimedOut,
            8 => Self::CachedFailure,
            9 => Self::Unsupported,
            10 => Self::LogLimitExceeded,
            11 => Self::NarSizeLimitExceeded,
            12 => Self::NotDeterministic,
            n => Self::Unknown(n),
        }
    }

    /// Human description, as Hydra's web UI words it.
    pub fn describe(&self) -> String {
        match self {
            Self::Succeeded => "succeeded".into(),
            Self::Failed => "failed".into(),
            Self::DependencyFailed => "dependency failed".into(),
            Self::Aborted => "aborted".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Obsolete => "obsolete status 5".into(),
            Self::FailedWithOutput => "failed with output".into(),
            Self::TimedOut => "timed out".into(),
            Self::CachedFailure => "cached failure".into(),
            Self::Unsupported => "unsupported system type".into(),
            Self::LogLimitExceeded => "log limit exceeded".into(),
            Self::NarSizeLimitExceeded => "output size limit exceeded".into(),
            Self::NotDeterministic => "not deterministic".into(),
            Self::Unknown(n) => format!("unknown status {n}"),
        }
    }
}

impl HydraEvent {
    /// Parses the JSON Hydra wrote.
    pub fn parse(bytes: &[u8]) -> Result<Self, ChannelError> {
        serde_json::from_slice(bytes).map_err(|e| ChannelError::HydraEvent(format!("not a RunCommand payload: {e}")))
    }

    /// Reads and parses the file named by `$HYDRA_JSON` (or `path`): a regular file of
    /// at most [`MAX_EVENT`] bytes.
    pub fn read(path: &std::path::Path) -> Result<Self, ChannelError> {
        let bytes = fleetgate_nix::read_small_file(path, MAX_EVENT)
            .map_err(|source| ChannelError::InputFile { what: "the Hydra event (--event, $HYDRA_JSON)", source })?;
        Self::parse(&bytes)
    }

    /// The build status, if finished.
    pub fn status(&self) -> Option<BuildStatus> {
        self.build_status.map(BuildStatus::from_code)
    }

    /// The `out` output's path (else the first output's).
    pub fn out_path(&self) -> Option<&str> {
        self.outputs.iter().find(|o| o.name == "out").or_else(|| self.outputs.first()).map(|o| o.path.as_str())
    }
}
