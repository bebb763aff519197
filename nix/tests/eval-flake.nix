# Evaluates the repository's flake.nix outputs under Nix 2.8 without fetching
# nixpkgs (its input is nixpkgs' `lib` with a stand-in `legacyPackages` whose
# `callPackage` calls the package function with a recording
# `rustPlatform.buildRustPackage`), for crates/agent/tests/nixos_module.rs:
#
#   nix-instantiate --eval --strict --json nix/tests/eval-flake.nix --arg lib 'import ../shared/nixpkgs-lib/lib'
#
# Returns the outputs' shape and what the package would be built from
# (nothing is built; `src` is not forced, so nothing is copied to the store).
{ lib }:
let
  flake = import ../../flake.nix;
  # callPackage as nixpkgs has it, for the few arguments nix/package.nix takes.
  callPackage = path: overrides:
    let f = import path; in
    f (builtins.intersectAttrs (builtins.functionArgs f) {
      inherit lib;
      pkg-config = "pkg-config";
      rustPlatform.buildRustPackage = attrs: attrs // { builtByRustPlatform = true; };
    } // overrides);
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: { inherit callPackage; });
  };
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };
  package = p: {
    inherit (p) pname version cargoBuildFlags doCheck builtByRustPlatform;
    lockFile = baseNameOf (toString p.cargoLock.lockFile);
    mainProgram = p.meta.mainProgram;
  };
  overlaid = outputs.overlays.default { inherit callPackage; } { };
in
{
  description = flake.description;
  nixpkgsUrl = flake.inputs.nixpkgs.url;
  systems = builtins.attrNames outputs.packages;
  default = package outputs.packages.x86_64-linux.default;
  sameAsDefault = outputs.packages.x86_64-linux.default.pname == outputs.packages.x86_64-linux.fleetgate.pname;
  overlay = package overlaid.fleetgate;
  agentModuleImports = map (p: baseNameOf (toString p)) outputs.nixosModules.agent.imports;
  agentModuleOverlays = builtins.length outputs.nixosModules.agent.nixpkgs.overlays;
  defaultModuleIsAgent = outputs.nixosModules.default == outputs.nixosModules.agent;
}
