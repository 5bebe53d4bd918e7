# Pure safety checks over the host's intended policy: which option combinations lock the operator
# out or silently weaken the host. Builtins only, so tests/nix/policy.nix evaluates every case
# without nixpkgs; the NixOS modules feed their option values in and turn the result into
# `assertions` and `warnings`.
#
# It decides nothing about rule syntax (firewall.nix does) and reads no files.
let
  inherit (builtins) attrNames concatStringsSep elem filter map toString;

  assertion = ok: message: { assertion = ok; inherit message; };

  # Input (all keys optional; defaults mirror the module defaults):
  #   sshExposure = { mode; acknowledgePublic; bootstrapUntil; sourceRanges; ports; }
  #   tailnet     = { mode; }
  #   egress      = { mode; allowedDomains; bots = { <name> = { allow = [..]; }; }; exemptUsers; }
  #   bots        = { <name> = { user; groups = [ primary + extra groups ]; }; }
  #   botGroup    = "clf-bots"
  #   firewall    = { allowedTCPPorts = [..]; nixosFirewall = bool; }
  #   ssh         = { authorizedKeyCount; passwordAuthentication; permitRootLogin; }
  defaults = {
    sshExposure = {
      mode = "tailnet";
      acknowledgePublic = false;
      bootstrapUntil = null;
      sourceRanges = [ ];
      ports = [ 22 ];
    };
    tailnet = { mode = "tailscale"; };
    egress = {
      mode = "smtp-only";
      allowedDomains = [ ];
      bots = { };
      exemptUsers = [ ];
    };
    bots = { };
    botGroup = "clf-bots";
    firewall = { allowedTCPPorts = [ ]; nixosFirewall = false; };
    ssh = { authorizedKeyCount = 1; passwordAuthentication = false; permitRootLogin = "prohibit-password"; };
  };

  norm = p: {
    sshExposure = defaults.sshExposure // (p.sshExposure or { });
    tailnet = defaults.tailnet // (p.tailnet or { });
    egress = defaults.egress // (p.egress or { });
    bots = p.bots or defaults.bots;
    botGroup = p.botGroup or defaults.botGroup;
    firewall = defaults.firewall // (p.firewall or { });
    ssh = defaults.ssh // (p.ssh or { });
  };

  assertions = p:
    let
      n = norm p;
      s = n.sshExposure;
      botNames = attrNames n.bots;
      botUsers = map (b: n.bots.${b}.user) botNames;
      proxyAllows =
        n.egress.allowedDomains
        ++ builtins.concatLists (map (b: n.egress.bots.${b}.allow or [ ]) (attrNames n.egress.bots));
      sshPortsOpened = filter (port: elem port n.firewall.allowedTCPPorts) s.ports;
    in
    [
      (assertion (!(s.mode == "tailnet" && n.tailnet.mode != "tailscale"))
        ''clawdlets.sshExposure.mode = "tailnet" accepts SSH only on the tailnet interface, but clawdlets.tailnet.mode = "${n.tailnet.mode}": nothing would accept SSH and you would lock yourself out. Set clawdlets.tailnet.mode = "tailscale", or use clawdlets.sshExposure.mode = "bootstrap" until the tailnet is up.'')
      (assertion (s.mode != "public" || s.acknowledgePublic)
        ''clawdlets.sshExposure.mode = "public" opens SSH port(s) ${concatStringsSep "," (map toString s.ports)} to the internet for good. If that is really intended, set clawdlets.sshExposure.acknowledgePublic = true (and consider clawdlets.sshExposure.sourceRanges); otherwise use "tailnet", or "bootstrap" for a first install.'')
      (assertion (s.mode == "bootstrap" || s.bootstrapUntil == null)
        ''clawdlets.sshExposure.bootstrapUntil is set but clawdlets.sshExposure.mode = "${s.mode}"; it only applies to mode "bootstrap". Remove bootstrapUntil.'')
      (assertion (sshPortsOpened == [ ] || s.mode == "public")
        ''SSH port(s) ${concatStringsSep "," (map toString sshPortsOpened)} are listed in networking.firewall.allowedTCPPorts, which would open them on every interface and bypass clawdlets.sshExposure.mode = "${s.mode}". Remove them (services.openssh.openFirewall is forced off by clawdlets).'')
      (assertion (!n.firewall.nixosFirewall)
        ''networking.firewall.enable = true adds NixOS' own input filter next to the clawdlets table; it would drop what clawdlets.sshExposure allows. Leave networking.firewall.enable = false (clawdlets owns inbound filtering and honours networking.firewall.allowedTCPPorts/allowedUDPPorts/interfaces).'')
      (assertion (n.ssh.authorizedKeyCount > 0)
        ''no SSH authorized key is configured for any user, and sshd only accepts keys: nobody could log in. Add users.users.<admin>.openssh.authorizedKeys.keys (the fleet's hosts.<host>.sshAuthorizedKeys).'')
      (assertion (!n.ssh.passwordAuthentication)
        ''services.openssh.settings.PasswordAuthentication = true turns password logins back on; clawdlets hosts are key-only. Remove the override.'')
      (assertion (elem n.ssh.permitRootLogin [ "no" "prohibit-password" "without-password" ])
        ''services.openssh.settings.PermitRootLogin = "${n.ssh.permitRootLogin}" allows root to log in with a password; use "prohibit-password" or "no".'')
      (assertion (n.egress.mode != "proxy-allowlist" || proxyAllows != [ ])
        ''clawdlets.egress.mode = "proxy-allowlist" with an empty allowlist blocks every outbound request of every bot. Add domains to clawdlets.egress.proxy.allowedDomains (or a bot's clawdlets.egress.proxy.bots.<bot>.allow), or choose another egress mode.'')
    ]
    ++ map
      (b:
        let bot = n.bots.${b}; in
        assertion (elem n.botGroup bot.groups)
          ''bot "${b}" runs as user "${bot.user}", which is not in group "${n.botGroup}": the orchestrator socket (0660, group ${n.botGroup}) would refuse it and the bot would escape the bot firewall scope. Add "${n.botGroup}" to users.users.${bot.user}.extraGroups (clawdlets.bots does this unless overridden).'')
      botNames
    ++ map
      (u: assertion (!(elem u botUsers))
        ''user "${toString u}" is a bot user and cannot be in clawdlets.egress.smtp.exemptUsers: bots never send mail directly.'')
      n.egress.exemptUsers;

  warnings = p:
    let
      n = norm p;
      s = n.sshExposure;
    in
    (if s.mode == "bootstrap" then [
      ("clawdlets: SSH is in BOOTSTRAP mode: port ${concatStringsSep "," (map toString s.ports)} is open on every interface"
        + (if s.bootstrapUntil == null then " until the bootstrap window (clawdlets.sshExposure.bootstrapWindow) after first boot runs out"
        else " until Unix time ${toString s.bootstrapUntil}")
        + ". Switch clawdlets.sshExposure.mode to \"tailnet\" as soon as the host is on the tailnet.")
    ] else [ ])
    ++ (if s.mode == "bootstrap" && n.tailnet.mode != "tailscale" then [
      "clawdlets: bootstrap SSH will expire and clawdlets.tailnet.mode = \"${n.tailnet.mode}\": after that nothing accepts SSH (console only). Enable the tailnet or plan the switch to another mode."
    ] else [ ])
    ++ (if s.mode == "public" && s.sourceRanges == [ ] then [
      "clawdlets: SSH is PUBLIC and open to the whole internet (clawdlets.sshExposure.sourceRanges is empty)."
    ] else [ ])
    ++ (if n.egress.mode == "none" then [
      "clawdlets: clawdlets.egress.mode = \"none\": bots can send SMTP and reach any host directly."
    ] else [ ]);

  # Convenience for tests and the flake: the messages of failed assertions.
  failures = p: map (a: a.message) (filter (a: !a.assertion) (assertions p));
in
{
  inherit defaults assertions warnings failures;
}
