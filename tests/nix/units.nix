# The serviceConfig of the clawdlets units as the modules render them (real nixpkgs lib module
# system, stand-in NixOS options, see module-eval.nix), for scripts/check-nix.sh to turn into
# unit files and score with `systemd-analyze security --offline=true`. Needs a nixpkgs lib:
#   nix-instantiate --eval --strict --json tests/nix/units.nix --arg nixpkgsLib /path/to/lib
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  inherit (import ./module-eval.nix { inherit nixpkgsLib; }) __eval;
  key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMo7vFJYSc8dpi9q9m3cA0VbcmhQbF0V2PA2RKEbWBpc test";
  cfg = __eval {
    clawdlets.enable = true;
    clawdlets.sshExposure.admin.authorizedKeys = [ key ];
    clawdlets.egress = { mode = "proxy-allowlist"; proxy.allowedDomains = [ "api.example.com" ]; };
    clawdlets.bots.maren.command = "/run/current-system/sw/bin/true";
    services.clfOrchestrator.enable = true;
  };
in
lib.genAttrs [ "clf-orchestrator" "clawdlets-egress-proxy" "clawdlets-bot-maren" ]
  (u: cfg.systemd.services.${u}.serviceConfig)
