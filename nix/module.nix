# services.fleetgate.agent: the host side of fleetgate's tested channels.
#
# The host upgrades itself to its *tested* build only: it polls its signed
# manifest, accepts it only when signed by a trusted key, for this host and
# newer than anything it accepted before, checks that a trusted cache holds
# the whole closure signed, fetches it by substitution only (no Nix
# evaluation on the host, no builds), runs fleetgate's pre-flight check
# against its own hardware, and applies it with magic rollback or a verified
# reboot. See docs/agent.md.
#
# Options follow system.autoUpgrade's (nixpkgs nixos/modules/tasks/
# auto-upgrade.nix): dates, randomizedDelaySec, fixedRandomDelay, persistent,
# allowReboot, rebootWindow — same types, same meaning.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.fleetgate.agent;
  inherit (lib) mkOption types;

  configFile = "/etc/fleetgate/agent.json";

  settings = lib.recursiveUpdate
    {
      host = cfg.hostName;
      server = cfg.server;
      manifest = cfg.manifest;
      trusted_keys = cfg.trustedKeys;
      caches = cfg.cache;
      cache_keys = cfg.cacheKeys;
      token_credential = if cfg.tokenFile == null then null else "token";
      state_dir = "/var/lib/fleetgate";
      poll_interval = cfg.pollInterval;
      reboot = {
        allow = cfg.allowReboot;
        window = cfg.rebootWindow;
        randomized_delay = cfg.randomizedDelaySec;
      };
      health = {
        units = cfg.healthUnits;
        commands = cfg.healthCommands;
      };
    }
    cfg.settings;

  daemon = cfg.mode == "daemon";

  # Hardening that fits a service that must switch the system as root: no
  # DynamicUser (it runs switch-to-configuration, bootctl, nix-env), no
  # ProtectSystem (it writes /nix, /boot, /var/lib); but no home directories,
  # a private /tmp, and no privilege gained through setuid binaries. Where
  # systemd is PID 1 the live switch itself runs in a transient unit of its
  # own (systemd-run --unit fleetgate-watchdog-<run>), outside this sandbox.
  hardening = {
    ProtectHome = true;
    PrivateTmp = true;
    NoNewPrivileges = true;
    StateDirectory = "fleetgate";
    StateDirectoryMode = "0700";
  };

  # What both units share: never restarted or stopped by a switch (they
  # drive it), the network up first (they reach the server and the caches),
  # Nix and the system path for their own work (the engine's scripts take
  # their tools from the systems' sw/bin), a home in the state directory.
  unit = {
    after = [ "network-online.target" ];
    wants = [ "network-online.target" ];
    restartIfChanged = false;
    unitConfig.X-StopOnRemoval = false;
    path = [ config.nix.package "/run/current-system/sw" ];
    environment.HOME = "/var/lib/fleetgate";
  };
in
{
  options.services.fleetgate.agent = {
    enable = lib.mkEnableOption "the fleetgate agent: upgrade this host to its tested build only";

    package = mkOption {
      type = types.package;
      default = pkgs.fleetgate;
      defaultText = lib.literalExpression "pkgs.fleetgate";
      description = "The fleetgate package (the flake's overlay provides `pkgs.fleetgate`).";
    };

    mode = mkOption {
      type = types.enum [ "timer" "daemon" ];
      default = "timer";
      description = ''
        `timer`: `fleetgate agent --once` when {option}`dates` says (nothing
        runs in between). `daemon`: a long-running agent polling every
        {option}`pollInterval` with conditional requests (idle, it uses no CPU).
      '';
    };

    server = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://fleet.example.org";
      description = "`fleetgate channel serve`'s URL: manifests (unless {option}`manifest`) and reports.";
    };

    manifest = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://cdn.example.org/fleetgate/hosts/{host}.json";
      description = "Where the signed manifest is, when not at the server (`http(s)://`, `file://`; `{host}` is replaced).";
    };

    hostName = mkOption {
      type = types.strMatching "[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?";
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "This host's name in the channel (its manifests' `host`).";
    };

    trustedKeys = mkOption {
      type = types.nonEmptyListOf types.str;
      example = [ "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
      description = "Keys (as in nix.conf's trusted-public-keys) that may sign this host's manifests.";
    };

    cache = mkOption {
      type = types.coercedTo types.str lib.singleton (types.nonEmptyListOf types.str);
      example = "https://cache.example.org";
      description = "The binary cache(s) the channel promotes into.";
    };

    cacheKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Keys that may sign the caches' narinfos (default: {option}`trustedKeys`).";
    };

    tokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/fleetgate-token";
      description = "The host's report token (read through systemd's LoadCredential, never in the store).";
    };

    dates = mkOption {
      type = types.str;
      default = "*:0/15";
      example = "04:40";
      description = "When the agent polls in `timer` mode ({manpage}`systemd.time(7)`).";
    };

    pollInterval = mkOption {
      type = types.str;
      default = "5m";
      example = "1m";
      description = "Between polls in `daemon` mode (with jitter; longer after failures).";
    };

    randomizedDelaySec = mkOption {
      type = types.str;
      default = "0";
      example = "45min";
      description = ''
        A randomized delay before each run of the timer and before a reboot
        (never past the end of {option}`rebootWindow`), chosen between zero
        and this value ({manpage}`systemd.time(7)`).
      '';
    };

    fixedRandomDelay = mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Make the timer's randomized delay the same between runs.";
    };

    persistent = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = "Run at once after boot when the timer missed a run while the host was down.";
    };

    allowReboot = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Reboot into a new generation that needs a reboot (kernel, initrd,
        switch inhibitors…): booted once, verified, then made the default,
        else the host falls back. Without it such an upgrade is reported as a
        pending reboot.
      '';
    };

    rebootWindow = mkOption {
      default = null;
      example = { lower = "01:00"; upper = "05:00"; };
      description = "Local times (HH:MM) between which a reboot may happen; `null`: any time.";
      type = types.nullOr (types.submodule {
        options = {
          lower = mkOption {
            type = types.strMatching "[[:digit:]]{2}:[[:digit:]]{2}";
            example = "01:00";
            description = "Lower limit of the reboot window.";
          };
          upper = mkOption {
            type = types.strMatching "[[:digit:]]{2}:[[:digit:]]{2}";
            example = "05:00";
            description = "Upper limit of the reboot window.";
          };
        };
      });
    };

    healthUnits = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "sshd.service" "nginx.service" ];
      description = "Units that must be active after a switch or boot (else it rolls back).";
    };

    healthCommands = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "curl -fsS http://127.0.0.1/health" ];
      description = "Commands that must exit 0 after a switch or boot.";
    };

    settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = { metrics.textfile = "/var/lib/prometheus-node-exporter-text-files/fleetgate.prom"; stale_after = "2d"; };
      description = "More of the agent's configuration (docs/agent.md), merged over what the options above set.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.server != null || cfg.manifest != null;
        message = "services.fleetgate.agent: set `server` (channel serve's URL) or `manifest` (where the signed manifest is).";
      }
    ];

    environment.etc."fleetgate/agent.json".text = builtins.toJSON settings;

    systemd.services.fleetgate-agent = unit // {
      description = "fleetgate agent: upgrade to this host's tested build";
      after = unit.after ++ [ "fleetgate-resume.service" ];
      wantedBy = lib.optional daemon "multi-user.target";
      serviceConfig = hardening // {
        Type = if daemon then "simple" else "oneshot";
        ExecStart = "${cfg.package}/bin/fleetgate agent --config ${configFile}"
          + (if daemon
          then " --exit-when-changed ${configFile} --exit-when-changed /etc/systemd/system/fleetgate-agent.service"
          else " --once");
        LoadCredential = lib.optional (cfg.tokenFile != null) "token:${cfg.tokenFile}";
      } // lib.optionalAttrs daemon {
        # After a switch to a new agent (its unit or configuration changed),
        # it exits 0 between polls and comes back as the new one.
        Restart = "always";
        RestartSec = "30s";
      };
    };

    systemd.timers.fleetgate-agent = lib.mkIf (!daemon) {
      description = "fleetgate agent: poll for this host's tested build";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.dates;
        RandomizedDelaySec = cfg.randomizedDelaySec;
        FixedRandomDelay = cfg.fixedRandomDelay;
        Persistent = cfg.persistent;
      };
    };

    # The host side of the verified reboot: at boot, bless the generation
    # that booted once and is healthy, or make the previous one the default
    # again (whoever rebooted the host — this agent, or a `fleetgate deploy`
    # that did not live to finish).
    systemd.services.fleetgate-resume = unit // {
      description = "fleetgate: finish a verified reboot pending at boot";
      wantedBy = [ "multi-user.target" ];
      serviceConfig = hardening // {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${cfg.package}/bin/fleetgate resume-pending";
      };
    };
  };
}
