# Evaluates nix/module.nix with the real NixOS module system (nixpkgs' lib,
# lib.evalModules) and the few NixOS options it sets declared loosely, for
# crates/agent/tests/nixos_module.rs:
#
#   nix-instantiate --eval --strict --json nix/tests/eval-module.nix \
#     --arg lib 'import ../shared/nixpkgs-lib/lib' --arg userConfig '{ services.fleetgate.agent = { … }; }'
#
# Returns what the module generates: units, timers, /etc files, and the
# messages of failed assertions. A definition of the wrong type makes the
# evaluation fail, as it does on NixOS.
{ lib, userConfig }:
let
  loose = {
    options = {
      networking.hostName = lib.mkOption { type = lib.types.str; default = "web1"; };
      nix.package = lib.mkOption { type = lib.types.str; default = "/nix/store/00000000000000000000000000000000-nix-2.28.3"; };
      systemd.services = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
      systemd.timers = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
      environment.etc = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
      assertions = lib.mkOption { type = lib.types.listOf lib.types.anything; default = [ ]; };
    };
  };
  pkgs = { fleetgate = "/nix/store/11111111111111111111111111111111-fleetgate-0.1.0"; };
  eval = lib.evalModules {
    modules = [ loose ../module.nix userConfig { _module.args.pkgs = pkgs; } ];
  };
  c = eval.config;
in
{
  services = c.systemd.services;
  timers = c.systemd.timers;
  etc = c.environment.etc;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
}
