# Every clawdlets NixOS module. `imports = [ clawdlets.nixosModules.default ];` then set
# `clawdlets.enable = true;` (nothing changes on a host until then, except services that have
# their own enable, like services.clfOrchestrator).
{
  imports = [
    ./core.nix
    ./firewall.nix
    ./ssh-exposure.nix
    ./tailnet.nix
    ./egress.nix
    ./bots.nix
    ./secrets.nix
    ./orchestrator.nix
    ./verify.nix
  ];
}
