# NixOS VM tests of the clawdlets modules, one feature each. They need Nix with nixpkgs and KVM:
#   nix build .#checks.x86_64-linux.vm-ssh-tailnet   (or `nix flake check`)
# The CI of this repository has no nixpkgs and cannot run them; it runs the pure-Nix unit tests
# and the packet-level nft tests (scripts/check-nix.sh, agent/tests/integration/nix_rules.rs).
{ pkgs, self }:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  runTest = test: pkgs.testers.runNixOSTest test;
  sshKeyPub = lib.fileContents ./fixtures/test-ssh-ed25519.pub;

  # Every test host: the clawdlets modules, the package from this flake, an operator key.
  base = { lib, ... }: {
    imports = [ self.nixosModules.default ];
    clawdlets.enable = true;
    clawdlets.package = self.packages.${system}.default;
    clawdlets.tailnet.mode = lib.mkDefault "none";
    clawdlets.sshExposure.mode = lib.mkDefault "bootstrap";
    clawdlets.sshExposure.admin.authorizedKeys = [ sshKeyPub ];
  };

  # The tailnet is played by a second VLAN: eth2 stands in for tailscale0 (no tailscaled in a
  # sandbox without internet), so "SSH only via the tailnet interface" is tested for real.
  tailnetOnEth2 = { lib, ... }: {
    virtualisation.vlans = [ 1 2 ];
    clawdlets.tailnet = { mode = "tailscale"; interface = "eth2"; };
    services.tailscale.enable = lib.mkForce false;
  };

  client = {
    virtualisation.vlans = [ 1 2 ];
    environment.etc."test-ssh-key" = { source = ./fixtures/test-ssh-ed25519; mode = "0400"; };
    programs.ssh.extraConfig = ''
      Host *
        BatchMode yes
        StrictHostKeyChecking no
        UserKnownHostsFile /dev/null
        ConnectTimeout 5
        IdentityFile /etc/test-ssh-key
    '';
  };

  addr = node: ifname: (builtins.head node.networking.interfaces.${ifname}.ipv4.addresses).address;

  # sshd hardening is the same in every mode.
  sshdHardening = ''
    cfg = server.succeed("sshd -T")
    for line in ["passwordauthentication no", "kbdinteractiveauthentication no", "x11forwarding no",
                 "allowagentforwarding no", "maxauthtries 3", "authenticationmethods publickey"]:
        assert line in cfg, f"sshd -T lacks '{line}'"
    assert "permitrootlogin without-password" in cfg or "permitrootlogin prohibit-password" in cfg
  '';

  mkSshTest = name: serverConfig: script: runTest {
    name = "clawdlets-ssh-${name}";
    nodes.server = { imports = [ base tailnetOnEth2 serverConfig ]; };
    nodes.client = client;
    testScript = { nodes, ... }: ''
      wan = "${addr nodes.server "eth1"}"
      tailnet = "${addr nodes.server "eth2"}"
      start_all()
      server.wait_for_unit("sshd.service")
      server.wait_for_unit("nftables.service")
      client.wait_for_unit("network-online.target")
      def ssh_ok(ip):
          client.succeed(f"ssh admin@{ip} true")
      def ssh_blocked(ip):
          client.fail(f"ssh admin@{ip} true")
      ${sshdHardening}
      ${script}
    '';
  };

  # A bot host and an "internet" node listening on the mail ports (TCP, and UDP 25) and 443.
  mkEgressTest = mode: script: runTest {
    name = "clawdlets-egress-${mode}";
    nodes.internet = {
      virtualisation.vlans = [ 1 ];
      networking.firewall.enable = false;
      systemd.services = lib.listToAttrs (map (p: lib.nameValuePair "listen-tcp-${toString p}" {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.socat}/bin/socat TCP-LISTEN:${toString p},fork,reuseaddr OPEN:/dev/null";
      }) [ 25 465 587 2525 443 ]) // {
        listen-udp-25 = {
          wantedBy = [ "multi-user.target" ];
          serviceConfig.ExecStart = "${pkgs.socat}/bin/socat -u UDP-RECV:25 OPEN:/tmp/udp25,creat,append";
        };
      };
    };
    nodes.server = {
      imports = [ base ];
      virtualisation.vlans = [ 1 ];
      clawdlets.egress.mode = mode;
      clawdlets.bots.maren.command = "${pkgs.coreutils}/bin/sleep infinity";
      environment.systemPackages = [ pkgs.nmap ];
    };
    testScript = ''
      start_all()
      internet.wait_for_unit("listen-tcp-443.service")
      internet.wait_for_unit("listen-udp-25.service")
      server.wait_for_unit("nftables.service")
      server.wait_for_unit("clawdlets-bot-maren.service")
      ${script}
    '';
  };

  mkSecretsTest = name: systemdActivation: runTest {
    name = "clawdlets-${name}";
    nodes.machine = { config, lib, ... }: {
      imports = [ base ];
      # Stands in for `nixos-anywhere --extra-files`: the host key is in place before any secret
      # is installed (also before users, for neededForUsers). Throwaway key; never do this for real.
      system.activationScripts = {
        testHostKey = {
          deps = [ "specialfs" ];
          text = "install -D -m 0400 ${./fixtures/test-host-age-key.txt} /var/lib/sops-nix/key.txt";
        };
      } // lib.optionalAttrs (!systemdActivation) {
        setupSecretsForUsers.deps = [ "testHostKey" ];
        setupSecrets.deps = [ "testHostKey" ];
      };
      services.userborn.enable = systemdActivation;
      clawdlets.sops.ageSshKeyPaths = [ ];
      clawdlets.bots.maren = { };
      clawdlets.secrets = {
        discord_token_maren = { sopsFile = ./fixtures/test-secrets.yaml; owner = "bot-maren"; };
        api_key = { sopsFile = ./fixtures/test-secrets.yaml; key = "nested/api_key"; path = "/var/lib/bot-api-key"; mode = "0440"; };
        admin_password_hash = { sopsFile = ./fixtures/test-secrets.yaml; neededForUsers = true; };
      };
      clawdlets.templates."maren.env" = {
        content = "DISCORD_TOKEN=${config.clawdlets.placeholder.discord_token_maren}\n";
        owner = "bot-maren";
      };
      users.users.operator = { isNormalUser = true; hashedPasswordFile = "/run/secrets-for-users/admin_password_hash"; };
    };
    testScript = { nodes, ... }: ''
      machine.wait_for_unit("multi-user.target")
      ${lib.optionalString systemdActivation ''
        machine.succeed("systemctl is-active clawdlets-secrets.service clawdlets-secrets-for-users.service")
      ''}
      assert machine.succeed("cat /run/secrets/discord_token_maren") == "test-discord-token-not-a-secret"
      assert machine.succeed("stat -c '%a %U %G' /run/secrets/discord_token_maren").strip() == "400 bot-maren bot-maren"
      machine.succeed("runuser -u bot-maren -- cat /run/secrets/discord_token_maren")
      machine.fail("runuser -u nobody -- cat /run/secrets/discord_token_maren")
      machine.succeed("test -L /var/lib/bot-api-key")
      assert machine.succeed("cat /var/lib/bot-api-key") == "test-nested-api-key"
      assert machine.succeed("stat -L -c '%a' /var/lib/bot-api-key").strip() == "440"
      assert machine.succeed("cat /run/secrets/rendered/maren.env") == "DISCORD_TOKEN=test-discord-token-not-a-secret\n"
      machine.succeed("grep -q '^operator:[$]6[$]testsalt[$]' /etc/shadow")
      assert machine.succeed("findmnt -n -o FSTYPE --target /run/secrets.d").strip() in ("ramfs", "tmpfs")
      # Only placeholders and ciphertext reach the store.
      machine.fail("grep -l test-discord-token-not-a-secret ${nodes.machine.clawdlets.sops.manifest} ${nodes.machine.clawdlets.templates."maren.env".file}")
      # Re-installing is repeatable and keeps the values.
      machine.succeed("${if systemdActivation then "systemctl restart clawdlets-secrets.service" else "/run/current-system/activate"}")
      assert machine.succeed("cat /run/secrets/discord_token_maren") == "test-discord-token-not-a-secret"
    '';
  };
in
{
  # A pet host: secrets from a real SOPS file and a test age key, owners, modes, nested keys,
  # custom paths, templates, neededForUsers feeding a password hash, and no plaintext in the store.
  vm-secrets = mkSecretsTest "secrets" false;

  # The same host with userborn: secrets installed by early-boot units instead of activation.
  vm-secrets-userborn = mkSecretsTest "secrets-userborn" true;

  # The orchestrator socket: 0660 clf-orchestrator:clf-bots, bots can connect, others cannot;
  # state dir 0700; the unit's sandbox scores <= 2.0 in systemd-analyze security.
  vm-orchestrator-socket = runTest {
    name = "clawdlets-orchestrator-socket";
    nodes.machine = {
      imports = [ base ];
      services.clfOrchestrator.enable = true;
      clawdlets.bots.maren = { };
      users.users.stranger.isNormalUser = true;
      environment.systemPackages = [ pkgs.socat ];
    };
    testScript = ''
      machine.wait_for_unit("clf-orchestrator.socket")
      assert machine.succeed("stat -c '%a %U %G' /run/clf/orchestrator.sock").strip() == "660 clf-orchestrator clf-bots"
      machine.succeed("id -nG bot-maren | grep -qw clf-bots")
      machine.fail("runuser -u stranger -- socat -u OPEN:/dev/null UNIX-CONNECT:/run/clf/orchestrator.sock")
      machine.succeed("runuser -u bot-maren -- socat -u OPEN:/dev/null UNIX-CONNECT:/run/clf/orchestrator.sock")
      machine.wait_for_unit("clf-orchestrator.service")
      assert machine.succeed("stat -c '%a %U' /var/lib/clf/orchestrator").strip() == "700 clf-orchestrator"
      print(machine.succeed("systemd-analyze security --no-pager clf-orchestrator.service | tail -1"))
      machine.succeed("systemd-analyze security --threshold=20 clf-orchestrator.service")
    '';
  };

  # tailnet: 22 only on the tailnet interface.
  vm-ssh-tailnet = mkSshTest "tailnet" { clawdlets.sshExposure.mode = "tailnet"; } ''
    ssh_ok(tailnet)
    ssh_blocked(wan)
  '';

  # bootstrap: 22 everywhere, then really closed when the window is over (also across an
  # nftables reload), with the tailnet path kept and a security event logged.
  vm-ssh-bootstrap = mkSshTest "bootstrap" { clawdlets.sshExposure.mode = "bootstrap"; } ''
    ssh_ok(wan)
    ssh_ok(tailnet)
    server.wait_until_succeeds("test -s /var/lib/clawdlets/bootstrap-deadline")
    server.succeed("echo 1 > /var/lib/clawdlets/bootstrap-deadline")
    server.succeed("systemctl start clawdlets-bootstrap-expiry.service")
    ssh_blocked(wan)
    ssh_ok(tailnet)
    server.succeed("systemctl reload nftables.service")
    ssh_blocked(wan)
    server.succeed("journalctl -t clawdlets | grep -q event=ssh_bootstrap_closed")
  '';

  # public: explicit acknowledgement; 22 everywhere and it stays open.
  vm-ssh-public = mkSshTest "public" {
    clawdlets.sshExposure = { mode = "public"; acknowledgePublic = true; };
  } ''
    ssh_ok(wan)
    ssh_ok(tailnet)
    server.fail("systemctl cat clawdlets-bootstrap-expiry.service")
  '';

  # smtp-only: mail ports (TCP and UDP) blocked for the bot and host-wide, HTTPS passes; the bot
  # unit's cgroup is registered in the nft set by systemd.
  vm-egress-smtp-only = mkEgressTest "smtp-only" ''
    for port in (25, 465, 587, 2525):
        server.fail(f"runuser -u bot-maren -- ncat -z -w 3 internet {port}")
        server.fail(f"ncat -z -w 3 internet {port}")
    server.succeed("runuser -u bot-maren -- ncat -z -w 3 internet 443")
    server.succeed("echo probe | runuser -u bot-maren -- ncat -u --send-only internet 25 || true")
    internet.fail("test -s /tmp/udp25")
    # systemd put the bot unit's cgroup into the set the cgroup rules match on.
    server.wait_until_succeeds("nft list set inet clawdlets bot_cgroups | grep -q clawdlets-bot-maren")
  '';

  # none: nothing is restricted (the negative control of the test above).
  vm-egress-none = mkEgressTest "none" ''
    server.succeed("runuser -u bot-maren -- ncat -z -w 3 internet 25")
    server.succeed("echo probe | runuser -u bot-maren -- ncat -u --send-only internet 25")
    internet.wait_until_succeeds("test -s /tmp/udp25")
    server.fail("nft list table inet clawdlets | grep -q 'chain output'")
  '';

  # proxy-allowlist: the bot reaches nothing directly; through the loopback proxy it reaches
  # allowed domains only. The unit carries IPAddressDeny=any and the proxy environment.
  vm-egress-proxy-allowlist = runTest {
    name = "clawdlets-egress-proxy-allowlist";
    nodes.internet = {
      virtualisation.vlans = [ 1 ];
      networking.firewall.enable = false;
      services.nginx = {
        enable = true;
        virtualHosts."allowed.test".locations."/".return = "200 allowed";
        virtualHosts."denied.test".locations."/".return = "200 denied";
      };
    };
    nodes.server = { nodes, ... }: {
      imports = [ base ];
      virtualisation.vlans = [ 1 ];
      networking.hosts.${addr nodes.internet "eth1"} = [ "allowed.test" "denied.test" ];
      clawdlets.egress = {
        mode = "proxy-allowlist";
        proxy.allowedDomains = [ "allowed.test" ];
        # The test "internet" is a private VLAN; the proxy refuses private ranges unless allowed.
        proxy.settings.allowRanges = [ "192.168.1.0/24" ];
      };
      clawdlets.bots.maren.command = "${pkgs.coreutils}/bin/sleep infinity";
      environment.systemPackages = [ pkgs.curl pkgs.nmap ];
    };
    testScript = ''
      start_all()
      internet.wait_for_unit("nginx.service")
      server.wait_for_unit("clawdlets-egress-proxy.service")
      server.wait_for_unit("clawdlets-bot-maren.service")
      server.succeed("curl -sf http://allowed.test/")  # root is not a bot
      server.fail("runuser -u bot-maren -- ncat -z -w 3 allowed.test 80")
      assert "allowed" in server.succeed("runuser -u bot-maren -- curl -sf -x http://127.0.0.1:3128 http://allowed.test/")
      server.fail("runuser -u bot-maren -- curl -sf -x http://127.0.0.1:3128 http://denied.test/")
      props = server.succeed("systemctl show clawdlets-bot-maren.service -p IPAddressDeny -p Environment")
      assert "HTTPS_PROXY=http://127.0.0.1:3128" in props, props
      assert "IPAddressDeny=" in props and ("0.0.0.0/0" in props or "any" in props), props
    '';
  };
}
