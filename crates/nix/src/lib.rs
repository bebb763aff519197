//! placeholder: Nix CLI wrapper.
