# The tailnet the host joins. `tailscale` runs tailscaled and opens its WireGuard port (UDP
# 41641 by default, through the clawdlets nftables table); `none` runs nothing. SSH over the
# tailnet is decided by clawdlets.sshExposure, not here.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.clawdlets;
  tcfg = cfg.tailnet;
in
{
  options.clawdlets.tailnet = {
    mode = mkOption {
      type = types.enum [ "tailscale" "none" ];
      default = "tailscale";
      example = "none";
      description = "Which tailnet the host joins: `tailscale` (tailscaled, UDP port opened) or `none`.";
    };

    port = mkOption {
      type = types.port;
      default = 41641;
      description = "UDP port tailscaled listens on (opened on every interface for direct connections).";
    };

    interface = mkOption {
      type = types.strMatching "[A-Za-z0-9_.@-]{1,15}";
      default = "tailscale0";
      description = "The tailnet interface; `sshExposure.mode = \"tailnet\"` accepts SSH only here.";
    };

    authKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/tailscale_auth_key";
      description = "File holding a Tailscale auth key for unattended login (e.g. a clawdlets secret's path). Never a Nix store path.";
    };

    ssh = mkOption {
      type = types.bool;
      default = false;
      description = "Also run Tailscale SSH (`tailscale up --ssh`); access is then governed by the tailnet ACLs as well.";
    };

    extraUpFlags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--advertise-tags=tag:bots" ];
      description = "Extra flags for `tailscale up`.";
    };
  };

  config = mkIf (cfg.enable && tcfg.mode == "tailscale") {
    assertions = [
      {
        assertion = tcfg.authKeyFile == null || !(lib.hasPrefix builtins.storeDir tcfg.authKeyFile);
        message = "clawdlets.tailnet.authKeyFile points into the world-readable Nix store; use a secret path such as config.clawdlets.secrets.<name>.path.";
      }
    ];
    warnings = lib.optional (tcfg.authKeyFile == null && cfg.sshExposure.mode == "tailnet")
      "clawdlets: tailnet SSH without clawdlets.tailnet.authKeyFile: run `tailscale up` on the console once, or the host stays unreachable over SSH.";

    services.tailscale = {
      enable = true;
      inherit (tcfg) port authKeyFile;
      interfaceName = tcfg.interface;
      # The clawdlets table opens the port; NixOS' firewall is off.
      openFirewall = false;
      extraUpFlags = lib.optional tcfg.ssh "--ssh" ++ tcfg.extraUpFlags;
    };
  };
}
