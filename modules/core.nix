# The switch and shared values every clawdlets module reads: `clawdlets.enable`, the agent
# package, and the pure helper library. It configures nothing by itself.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption types literalExpression;
in
{
  options.clawdlets = {
    enable = mkEnableOption ''
      the clawdlets host policy: the nftables table for SSH exposure, tailnet and egress, sshd
      hardening, bot users, and /etc/clawdlets/verify.json'';

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../nix/package.nix { };
      defaultText = literalExpression "clawdlets.packages.\${system}.default";
      description = "The clawdlets agent package (provides `clawdlets` for activation, proxy, verify).";
    };

    lib = mkOption {
      type = types.attrs;
      default = import ./lib;
      readOnly = true;
      internal = true;
      description = "The pure helper functions of modules/lib (firewall, policy, manifest, fleet, verify).";
    };
  };

  config = lib.mkIf config.clawdlets.enable {
    environment.systemPackages = [ config.clawdlets.package ];
  };
}
