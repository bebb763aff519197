# fleetgate, built with nixpkgs' rustPlatform from this repository's
# Cargo.lock (the `fleetgate` binary: CLI, channel, agent). The tests need
# root and a lab of network namespaces, so they do not run in the build
# sandbox; `bash scripts/test` runs them.
{ lib, rustPlatform, pkg-config }:

rustPlatform.buildRustPackage {
  pname = "fleetgate";
  version = (lib.importTOML ../Cargo.toml).workspace.package.version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--package" "fleetgate" ];
  nativeBuildInputs = [ pkg-config ];
  doCheck = false;

  meta = {
    description = "Keep a fleet of NixOS machines up to date without ever leaving one unbootable";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "fleetgate";
    platforms = lib.platforms.linux;
  };
}
