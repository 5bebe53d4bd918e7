# Renders the host's nftables policy from clawdlets.sshExposure, clawdlets.tailnet and
# clawdlets.egress through the pure generator (lib/firewall.nix), and turns the pure safety checks
# (lib/policy.nix) into assertions and warnings. clawdlets owns inbound filtering: NixOS' own
# firewall is switched off by default, and the ports other modules open through
# networking.firewall.{allowedTCPPorts,allowedUDPPorts,interfaces,trustedInterfaces} are carried
# over into the clawdlets table so `openFirewall = true` of other services keeps working.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf mkDefault mkForce types;
  cfg = config.clawdlets;
  fwcfg = cfg.firewall;
  nixosFw = config.networking.firewall;
  clib = cfg.lib;

  botUsers = lib.mapAttrsToList (_: b: b.user) cfg.bots;

  policyInput = {
    tableName = fwcfg.tableName;
    sshExposure = {
      inherit (cfg.sshExposure) mode ports bootstrapUntil sourceRanges;
    };
    tailnet = {
      inherit (cfg.tailnet) mode interface port;
    };
    egress = {
      inherit (cfg.egress) mode;
      smtpPorts = cfg.egress.smtp.ports;
      smtpHostWide = cfg.egress.smtp.hostWide;
      exemptUsers = cfg.egress.smtp.exemptUsers;
      inherit botUsers;
      botCgroupSet = true;
      botLoopbackTcpPorts =
        if cfg.egress.mode == "proxy-allowlist" then [ cfg.egress.proxy.port ] ++ cfg.egress.proxy.extraBotLoopbackPorts else null;
    };
    inbound = {
      tcpPorts = lib.subtractLists cfg.sshExposure.ports nixosFw.allowedTCPPorts;
      udpPorts = nixosFw.allowedUDPPorts;
      interfaces = lib.mapAttrs (_: i: {
        tcpPorts = lib.subtractLists cfg.sshExposure.ports i.allowedTCPPorts;
        udpPorts = i.allowedUDPPorts;
      }) (lib.filterAttrs (_: i: i.allowedTCPPorts != [ ] || i.allowedUDPPorts != [ ]) nixosFw.interfaces);
      trustedInterfaces = lib.filter (i: i != "lo") nixosFw.trustedInterfaces;
    };
  };

  sshKeyCount = lib.foldl' (n: u: n + lib.length u.openssh.authorizedKeys.keys + lib.length u.openssh.authorizedKeys.keyFiles) 0
    (lib.attrValues config.users.users);

  checkInput = {
    inherit (policyInput) tailnet;
    sshExposure = policyInput.sshExposure // { inherit (cfg.sshExposure) acknowledgePublic; };
    egress = {
      inherit (cfg.egress) mode;
      allowedDomains = cfg.egress.proxy.allowedDomains;
      bots = cfg.egress.proxy.bots;
      exemptUsers = cfg.egress.smtp.exemptUsers;
    };
    bots = lib.mapAttrs (_: b: {
      inherit (b) user;
      groups = [ config.users.users.${b.user}.group ] ++ config.users.users.${b.user}.extraGroups;
    }) cfg.bots;
    botGroup = cfg.botGroup;
    firewall = {
      allowedTCPPorts = nixosFw.allowedTCPPorts;
      nixosFirewall = nixosFw.enable;
    };
    ssh = {
      authorizedKeyCount = sshKeyCount;
      passwordAuthentication = config.services.openssh.settings.PasswordAuthentication;
      permitRootLogin = config.services.openssh.settings.PermitRootLogin;
    };
  };
in
{
  options.clawdlets.firewall = {
    enable = mkOption {
      type = types.bool;
      default = cfg.enable;
      defaultText = lib.literalExpression "config.clawdlets.enable";
      description = ''
        Whether clawdlets renders the host's nftables policy (table `inet <tableName>`). Turning
        this off leaves SSH exposure, tailnet and egress modes without enforcement; `clawdlets
        verify` reports that.
      '';
    };

    tableName = mkOption {
      type = types.strMatching "[a-z][a-z0-9_-]{0,30}";
      default = "clawdlets";
      description = "Name of the nftables table (family inet) clawdlets owns.";
    };

    ruleset = mkOption {
      type = types.lines;
      readOnly = true;
      description = "The generated nftables ruleset text (for inspection; `nft list table inet clawdlets` shows the live one).";
    };
  };

  config = mkIf cfg.enable (lib.mkMerge [
    {
      clawdlets.firewall.ruleset = clib.firewall.render policyInput;

      assertions = clib.policy.assertions checkInput ++ [
        {
          assertion = nixosFw.allowedTCPPortRanges == [ ] && nixosFw.allowedUDPPortRanges == [ ];
          message = "networking.firewall.allowed{TCP,UDP}PortRanges are not carried into the clawdlets table; list the ports in allowedTCPPorts/allowedUDPPorts instead.";
        }
      ];
      warnings = clib.policy.warnings checkInput
        ++ lib.optional (!fwcfg.enable)
          "clawdlets.firewall.enable = false: clawdlets.sshExposure, clawdlets.tailnet and clawdlets.egress are NOT enforced on this host.";
    }
    (mkIf fwcfg.enable {
      networking.firewall.enable = mkDefault false;
      networking.nftables.enable = true;
      # Only the clawdlets table is replaced on (re)load; tables of tailscaled, docker or the
      # user stay untouched (mkDefault: set flushRuleset = true to get a clean slate instead).
      networking.nftables.flushRuleset = mkDefault false;
      networking.nftables.tables.${fwcfg.tableName} = {
        inherit (clib.firewall.nixosTable policyInput) family content;
      };
      # The build-time `nft -c` runs in a sandbox (an LKL kernel) without the bot users: user
      # names in skuid sets cannot resolve there, so the check sees uid 65534 instead, and the
      # cgroup-socket rules (nft_socket, not in every check kernel) are left out of the check
      # only. tests/nix and nix_rules.rs check the full text against a real kernel.
      networking.nftables.preCheckRuleset = ''
        sed -E -i -e 's/meta skuid \{[^}]*\}/meta skuid { 65534 }/g' -e '/socket cgroupv2/d' ruleset.conf
      '';
      services.openssh.openFirewall = mkForce false;
    })
  ]);
}
