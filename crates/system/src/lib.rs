//! placeholder: NixOS system toplevel reader.
