# Evaluates the real clawdlets modules with the real nixpkgs *lib* module system (evalModules),
# against thin stand-ins for the NixOS options they set (users, systemd, networking, openssh...)
# and a fake `pkgs` whose builders return marker strings. It catches what `--parse` cannot:
# wrong option paths, type errors, bad mkIf/mkMerge, infinite recursion, and it checks the
# wiring (the ruleset reaching networking.nftables, units, activation snippets, assertions).
#
# It is NOT a NixOS evaluation and no substitute for the VM tests in tests/vm (flake checks).
# Needs a nixpkgs `lib` directory (e.g. a checkout of nixpkgs.lib); scripts/check-nix.sh runs it
# when CLAWDLETS_NIXPKGS_LIB points at one:
#   nix-instantiate --eval --strict --json tests/nix/module-eval.nix --arg nixpkgsLib /path/to/lib
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  inherit (lib) mkOption types;
  h = import ./harness.nix;

  anyAttrs = types.attrsOf types.anything;
  # systemd's unit option merge: lists concatenate, single values must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      if lib.any (d: builtins.isList d.value) defs
      then lib.concatMap (d: lib.toList d.value) defs
      else lib.mergeEqualOption loc defs;
  };
  unitModule = {
    freeformType = anyAttrs;
    options.serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    options.environment = mkOption { type = types.attrsOf types.str; default = { }; };
  };

  # Stand-ins for the NixOS options the modules touch (types close to NixOS', defaults as NixOS).
  nixosStub = { config, ... }: {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };
      users.users = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          freeformType = anyAttrs;
          options = {
            group = mkOption { type = types.str; default = ""; };
            extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
            openssh.authorizedKeys.keys = mkOption { type = types.listOf types.str; default = [ ]; };
            openssh.authorizedKeys.keyFiles = mkOption { type = types.listOf types.path; default = [ ]; };
          };
        });
      };
      users.groups = mkOption { type = types.attrsOf anyAttrs; default = { }; };
      networking.hostName = mkOption { type = types.str; default = "nixos"; };
      networking.firewall = {
        enable = mkOption { type = types.bool; default = true; };
        allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
        allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
        allowedTCPPortRanges = mkOption { type = types.listOf anyAttrs; default = [ ]; };
        allowedUDPPortRanges = mkOption { type = types.listOf anyAttrs; default = [ ]; };
        trustedInterfaces = mkOption { type = types.listOf types.str; default = [ ]; };
        interfaces = mkOption {
          default = { };
          type = types.attrsOf (types.submodule {
            options.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
            options.allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
          });
        };
      };
      networking.nftables = {
        enable = mkOption { type = types.bool; default = false; };
        ruleset = mkOption { type = types.lines; default = ""; };
        flushRuleset = mkOption { type = types.bool; default = true; };
        tables = mkOption {
          default = { };
          type = types.attrsOf (types.submodule ({ name, ... }: {
            options.name = mkOption { type = types.str; default = name; };
            options.family = mkOption { type = types.enum [ "ip" "ip6" "inet" "arp" "bridge" "netdev" ]; };
            options.content = mkOption { type = types.lines; };
          }));
        };
        preCheckRuleset = mkOption { type = types.lines; default = ""; };
      };
      networking.hosts = mkOption { type = anyAttrs; default = { }; };
      systemd.services = mkOption { type = types.attrsOf (types.submodule unitModule); default = { }; };
      systemd.sockets = mkOption { type = types.attrsOf (types.submodule unitModule); default = { }; };
      systemd.timers = mkOption { type = types.attrsOf anyAttrs; default = { }; };
      services.openssh = {
        enable = mkOption { type = types.bool; default = false; };
        ports = mkOption { type = types.listOf types.port; default = [ 22 ]; };
        openFirewall = mkOption { type = types.bool; default = true; };
        hostKeys = mkOption { type = types.listOf anyAttrs; default = [ { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; } ]; };
        settings = mkOption {
          default = { };
          type = types.submodule {
            freeformType = anyAttrs;
            options.PasswordAuthentication = mkOption { type = types.bool; default = true; };
            options.KbdInteractiveAuthentication = mkOption { type = types.bool; default = true; };
            options.PermitRootLogin = mkOption { type = types.str; default = "prohibit-password"; };
            options.X11Forwarding = mkOption { type = types.bool; default = false; };
          };
        };
      };
      services.tailscale = mkOption { type = anyAttrs; default = { }; };
      environment.systemPackages = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      environment.etc = mkOption { type = types.attrsOf anyAttrs; default = { }; };
      security.sudo.wheelNeedsPassword = mkOption { type = types.bool; default = true; };
      system.activationScripts = mkOption { type = types.attrsOf anyAttrs; default = { }; };
      systemd.sysusers.enable = mkOption { type = types.bool; default = false; };
      services.userborn.enable = mkOption { type = types.bool; default = false; };
    };
  };

  # A fake pkgs: builders return recognisable strings, so rendered text can be inspected.
  fakePkgs = rec {
    inherit lib;
    callPackage = _: _: { type = "derivation"; name = "clawdlets"; outPath = "/nix/store/fake-clawdlets"; };
    writeText = name: text: "/nix/store/fake-${name}";
    writeShellScript = name: text: "/nix/store/fake-${name}";
    writeTextFile = a: "/nix/store/fake-${a.name}";
    formats.json = _: {
      type = types.attrsOf types.anything;
      generate = name: value: "/nix/store/fake-${name}";
    };
    coreutils = "/nix/store/fake-coreutils";
    gnugrep = "/nix/store/fake-gnugrep";
    nftables = "/nix/store/fake-nftables";
    util-linux = "/nix/store/fake-util-linux";
  };

  eval = module: (lib.evalModules {
    modules = [ nixosStub ../../modules module ];
    specialArgs.pkgs = fakePkgs;
  }).config;

  failures = cfg: map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  fails = needle: cfg: lib.any (m: h.contains needle m) (failures cfg);

  key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMo7vFJYSc8dpi9q9m3cA0VbcmhQbF0V2PA2RKEbWBpc test";
  base = { clawdlets.enable = true; clawdlets.sshExposure.admin.authorizedKeys = [ key ]; };
  with' = extra: eval (lib.recursiveUpdate base extra);

  sane = eval base;
  fleet = builtins.fromJSON (builtins.readFile ../fleet/clawdlets.json);
  fleetHost = name: eval ((import ../../modules/lib/fleet.nix).hostSettings fleet name);
  f1 = fleetHost "fleet-1";
  f2 = fleetHost "fleet-2";
  bootstrap = with' { clawdlets.sshExposure.mode = "bootstrap"; };
  proxy = with' {
    clawdlets.egress = { mode = "proxy-allowlist"; proxy.allowedDomains = [ "api.example.com" ]; };
    clawdlets.bots.maren.command = "/bin/bot";
  };
  orch = with' { services.clfOrchestrator.enable = true; clawdlets.bots.maren = { }; };
  secrets = eval (lib.recursiveUpdate base {
    clawdlets.bots.maren = { secrets = [ "tok" ]; command = "/bin/bot"; };
    clawdlets.secrets.tok.owner = "bot-maren";
    clawdlets.secrets.pw.neededForUsers = true;
  });
  disabled = eval { };
  sysusers = eval (lib.recursiveUpdate base {
    systemd.sysusers.enable = true;
    clawdlets.secrets.tok = { };
    clawdlets.secrets.pw.neededForUsers = true;
  });
in
{
  # Not a test case (run.nix skips `__` names): the evaluator, for tests/nix/units.nix.
  __eval = eval;

  saneHasNoFailures = { expr = failures sane; expected = [ ]; };
  disabledTouchesNothing = { expr = [ disabled.networking.nftables.enable disabled.services.openssh.enable (disabled.assertions == [ ]) ]; expected = [ false false true ]; };
  rulesetReachesNftables = {
    expr = with sane.networking.nftables; [ tables.clawdlets.family (h.contains "chain input {" tables.clawdlets.content) flushRuleset ruleset ];
    expected = [ "inet" true false "" ];
  };
  nixosFirewallOff = { expr = [ sane.networking.firewall.enable sane.networking.nftables.enable sane.services.openssh.openFirewall ]; expected = [ false true false ]; };
  sshdHardened = {
    expr = with sane.services.openssh.settings; [ PasswordAuthentication KbdInteractiveAuthentication PermitRootLogin X11Forwarding AllowAgentForwarding MaxAuthTries ];
    expected = [ false false "prohibit-password" false false 3 ];
  };
  adminUser = { expr = sane.users.users.admin.extraGroups; expected = [ "wheel" ]; };
  tailscaleOn = { expr = [ sane.services.tailscale.enable sane.services.tailscale.openFirewall sane.services.tailscale.port ]; expected = [ true false 41641 ]; };
  tailnetLockout = fails "lock yourself out" (with' { clawdlets.sshExposure.mode = "tailnet"; clawdlets.tailnet.mode = "none"; });
  publicNeedsAck = fails "acknowledgePublic" (with' { clawdlets.sshExposure.mode = "public"; });
  noKeys = fails "nobody could log in" (eval { clawdlets.enable = true; });
  sshPortBypass = fails "bypass" (with' { networking.firewall.allowedTCPPorts = [ 22 80 ]; });
  otherPortsCarried = h.contains "tcp dport { 80 } accept" (with' { networking.firewall.allowedTCPPorts = [ 80 ]; clawdlets.sshExposure = { mode = "public"; acknowledgePublic = true; }; }).networking.nftables.tables.clawdlets.content;
  botOutsideGroup = fails "not in group" (eval (lib.recursiveUpdate base { clawdlets.bots.x = { }; users.users.bot-x.extraGroups = lib.mkForce [ ]; }));
  emptyProxy = fails "empty allowlist" (with' { clawdlets.egress.mode = "proxy-allowlist"; });
  bootstrapUnit = { expr = [ (bootstrap.systemd.services ? clawdlets-bootstrap-expiry) (bootstrap.systemd.timers ? clawdlets-bootstrap-expiry) ]; expected = [ true true ]; };
  bootstrapReloadHook = {
    expr = with bootstrap.systemd.services.nftables.serviceConfig; [ ExecStartPost ExecReload ];
    expected = [ [ "-/nix/store/fake-clawdlets-bootstrap-expiry" ] [ "-/nix/store/fake-clawdlets-bootstrap-expiry" ] ];
  };
  bootstrapWarns = builtins.any (w: h.contains "BOOTSTRAP" w) bootstrap.warnings;
  bootstrapWindowSeconds = { expr = (with' { clawdlets.sshExposure = { mode = "bootstrap"; bootstrapWindow = "2h"; }; }).clawdlets.sshExposure.bootstrapWindowSeconds; expected = 7200; };
  botUser = { expr = with proxy.users.users.bot-maren; [ group extraGroups isSystemUser ]; expected = [ "bot-maren" [ "clf-bots" ] true ]; };
  botInRuleset = h.contains ''meta skuid { "bot-maren" } oifname != "lo"'' proxy.networking.nftables.tables.clawdlets.content;
  botUnitSandboxed = {
    expr = with proxy.systemd.services.clawdlets-bot-maren.serviceConfig; [ User IPAddressDeny IPAddressAllow NFTSet ];
    expected = [ "bot-maren" "any" [ "localhost" ] [ "cgroup:inet:clawdlets:bot_cgroups" ] ];
  };
  botUnitProxyEnv = { expr = proxy.systemd.services.clawdlets-bot-maren.environment.HTTPS_PROXY; expected = "http://127.0.0.1:3128"; };
  proxyService = h.contains "egress-proxy --config /nix/store/fake-clawdlets-egress-proxy.json" proxy.systemd.services.clawdlets-egress-proxy.serviceConfig.ExecStart;
  proxyLoopbackOnlyProxyPort = h.contains "tcp dport != { 3128 }" proxy.networking.nftables.tables.clawdlets.content;
  orchSocket = {
    expr = with orch.systemd.sockets.clf-orchestrator; [ listenStreams socketConfig.SocketMode socketConfig.SocketGroup socketConfig.SocketUser ];
    expected = [ [ "/run/clf/orchestrator.sock" ] "0660" "clf-bots" "clf-orchestrator" ];
  };
  orchService = {
    expr = with orch.systemd.services.clf-orchestrator.serviceConfig; [ Type WatchdogSec User StateDirectory StateDirectoryMode CapabilityBoundingSet PrivateNetwork MemoryDenyWriteExecute IPAddressDeny ];
    expected = [ "notify" 30 "clf-orchestrator" "clf/orchestrator" "0700" "" true true "any" ];
  };
  orchExec = h.hasAll [ "/nix/store/fake-clawdlets/bin/clawdlets orchestrator serve --socket /run/clf/orchestrator.sock --state /var/lib/clf/orchestrator/state.sqlite" "--group clf-bots" "--config /nix/store/fake-clf-orchestrator.json" ] orch.systemd.services.clf-orchestrator.serviceConfig.ExecStart;
  orchUser = { expr = orch.users.users.clf-orchestrator.isSystemUser; expected = true; };
  verifyJson = {
    expr = builtins.fromJSON orch.environment.etc."clawdlets/verify.json".text;
    expected = {
      sshExposure = "tailnet"; tailnet = "tailscale"; egress = "smtp-only"; botUnits = [ ]; securityThreshold = 2.0;
      tailnetInterface = "tailscale0"; botUsers = [ "bot-maren" ]; adminUser = "admin";
      orchestrator = { socket = "/run/clf/orchestrator.sock"; stateDir = "/var/lib/clf/orchestrator"; user = "clf-orchestrator"; group = "clf-bots"; };
    };
  };
  secretsActivation = h.hasAll [ "secrets install --manifest /nix/store/fake-clawdlets-manifest.json" "dry-activate" ] secrets.system.activationScripts.setupSecrets.text;
  secretsActivationOrder = { expr = secrets.system.activationScripts.setupSecrets.deps; expected = [ "specialfs" "users" "groups" ]; };
  secretsForUsers = h.hasAll [ "manifest-for-users.json" "--ignore-passwd" ] secrets.system.activationScripts.setupSecretsForUsers.text;
  secretsBeforeUsers = { expr = secrets.system.activationScripts.users.deps; expected = [ "setupSecretsForUsers" ]; };
  secretDefaults = {
    expr = with secrets.clawdlets.secrets.tok; [ sopsFile path group mode restartUnits format ];
    expected = [ "/var/lib/clawdlets/secrets/hosts/nixos/tok.yaml" "/run/secrets/tok" "bot-maren" "0400" [ "clawdlets-bot-maren.service" ] "yaml" ];
  };
  userSecretPath = { expr = secrets.clawdlets.secrets.pw.path; expected = "/run/secrets-for-users/pw"; };
  systemdActivationUnits = {
    expr = with sysusers.systemd.services; [
      (sysusers.system.activationScripts ? setupSecrets)
      clawdlets-secrets.before clawdlets-secrets.unitConfig.DefaultDependencies clawdlets-secrets.environment.SOPS_RESTART_UNITS_VIA_SYSTEMCTL
      clawdlets-secrets-for-users.before
    ];
    expected = [ false [ "sysinit.target" "sysinit-reactivation.target" ] false "1" [ "systemd-sysusers.service" "userborn.service" "sysinit.target" "sysinit-reactivation.target" ] ];
  };
  systemdActivationExec = h.hasAll [ "secrets install --manifest /nix/store/fake-clawdlets-manifest-for-users.json --ignore-passwd" ] sysusers.systemd.services.clawdlets-secrets-for-users.serviceConfig.ExecStart;
  secretsSaneNoFailures = { expr = failures secrets; expected = [ ]; };
  userSecretMustBeRoot = fails "must be owned by root" (eval (lib.recursiveUpdate base { clawdlets.secrets.pw = { neededForUsers = true; owner = "admin"; }; }));
  fleetHostsEvaluate = { expr = [ (failures f1) (failures f2) ]; expected = [ [ ] [ ] ]; };
  fleetHostName = { expr = [ f1.networking.hostName f1.clawdlets.sshExposure.mode f2.clawdlets.egress.mode ]; expected = [ "fleet-1" "bootstrap" "proxy-allowlist" ]; };
  fleetSecretsPath = { expr = f1.clawdlets.secrets.discord_token_maren.sopsFile; expected = "/var/lib/clawdlets/secrets/hosts/fleet-1/discord_token_maren.yaml"; };
  fleetBotProxyConfigUsers = h.contains ''meta skuid { "bot-ana", "bot-bo" }'' f2.networking.nftables.tables.clawdlets.content;
}
