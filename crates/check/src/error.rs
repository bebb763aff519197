//! [`CheckError`]: what can go wrong in this crate's fallible functions.
//! [`crate::check`] itself never fails: each of these becomes a finding.

use fleetgate_nix::NixError;
use fleetgate_system::SystemError;

/// Errors of `fleetgate-check`. Messages never repeat their source: print
/// the chain (see [`error_chain`]) or use a reporter such as miette.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Nix is not installed or not usable on this machine.
    #[error("Nix is not usable on this machine")]
    NixUnavailable {
        /// What Nix detection said.
        #[source]
        source: NixError,
    },
    /// The closure of a store path cannot be listed (it is not in the local
    /// store, or Nix failed).
    #[error("cannot list the closure of {path}")]
    Closure {
        /// The store path.
        path: String,
        /// What Nix said.
        #[source]
        source: NixError,
    },
    /// A system toplevel cannot be opened.
    #[error("cannot open the system {path}")]
    Open {
        /// The system.
        path: String,
        /// Why.
        #[source]
        source: SystemError,
    },
    /// A host's system cannot be rebuilt from its facts in a temporary
    /// directory.
    #[error("cannot rebuild the host's system {path} from its facts ({step})")]
    Shadow {
        /// The host's system.
        path: String,
        /// What was being done.
        step: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A flake's configuration cannot be evaluated.
    #[error("cannot evaluate {installable}")]
    Eval {
        /// The installable evaluated.
        installable: String,
        /// What Nix said.
        #[source]
        source: NixError,
    },
    /// The evaluation gave a value of an unexpected shape.
    #[error("the evaluation of {installable} is not what the hazard lints expect")]
    EvalShape {
        /// The installable evaluated.
        installable: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// The messages of an error and its sources, outermost first, leaving out
/// a source whose text an earlier message already contains (errors of some
/// crates print their source in their own message). The one flattener of
/// error chains: [`error_chain`] joins it for findings, the CLI builds its
/// miette chain from it.
#[must_use]
pub fn error_messages(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !texts.iter().any(|t| t.contains(&text)) {
            texts.push(text);
        }
        source = e.source();
    }
    texts
}

/// An error and its sources on one line, `a: b: c`, for a finding's
/// message (see [`error_messages`]).
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    error_messages(error).join(": ")
}

/// Text on one line for a finding's message: trimmed non-empty lines
/// joined with ` / `.
pub(crate) fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_do_not_repeat_their_source() {
        let e = CheckError::Shadow {
            path: "/nix/store/x".into(),
            step: "writing boot.json".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(e.to_string(), "cannot rebuild the host's system /nix/store/x from its facts (writing boot.json)");
        assert_eq!(
            error_chain(&e),
            "cannot rebuild the host's system /nix/store/x from its facts (writing boot.json): disk full"
        );
    }

    #[test]
    fn a_source_already_said_is_left_out_and_empty_ones_too() {
        #[derive(Debug, thiserror::Error)]
        #[error("{text}")]
        struct E {
            text: &'static str,
            #[source]
            source: Option<Box<E>>,
        }
        let chain = E {
            text: "cannot read /x: permission denied",
            source: Some(Box::new(E {
                text: "permission denied",
                source: Some(Box::new(E { text: "", source: Some(Box::new(E { text: "os error 13", source: None })) })),
            })),
        };
        assert_eq!(error_messages(&chain), ["cannot read /x: permission denied", "os error 13"]);
        assert_eq!(error_chain(&chain), "cannot read /x: permission denied: os error 13");
    }
}
