# Unit tests of modules/lib/firewall.nix: the nft text generated for every SSH, tailnet and egress
# mode, and the input validation that keeps option values from injecting nft syntax. The packet-
# level proof of the same rulesets is agent/tests/integration/nix_rules.rs.
let
  fw = import ../../modules/lib/firewall.nix;
  h = import ./harness.nix;
  r = fw.render;
  tailnet = r { sshExposure.mode = "tailnet"; };
  bootstrap = r { sshExposure.mode = "bootstrap"; };
  bootstrapUntil = r { sshExposure = { mode = "bootstrap"; bootstrapUntil = 1900000000; }; };
  public = r { sshExposure.mode = "public"; tailnet.mode = "none"; };
  publicRanges = r { sshExposure = { mode = "public"; sourceRanges = [ "198.51.100.0/24" "2001:db8::/32" ]; }; };
  smtp = r { egress = { mode = "smtp-only"; botUsers = [ "bot-maren" 991 ]; }; };
  smtpBotsOnly = r { egress = { mode = "smtp-only"; smtpHostWide = false; botUsers = [ "bot-maren" ]; botCgroupSet = false; }; };
  smtpExempt = r { egress = { mode = "smtp-only"; exemptUsers = [ "postfix" ]; }; };
  proxy = r { egress = { mode = "proxy-allowlist"; botUsers = [ "bot-a" ]; botLoopbackTcpPorts = [ 3128 ]; }; };
  noEgress = r { egress.mode = "none"; };
  smtpSet = "th dport { 25, 465, 587, 2525 }";
in
{
  # --- inbound: SSH exposure ---------------------------------------------------------------------
  inputPolicyIsDrop = h.contains "type filter hook input priority filter; policy drop;" tailnet;
  tailnetSshOnlyOnTailscale0 = h.contains ''iifname "tailscale0" tcp dport { 22 } accept'' tailnet;
  tailnetHasNoOpenSsh = {
    # The only SSH accept in tailnet mode is the interface-scoped one.
    expr = h.countOf "tcp dport { 22 } accept" tailnet;
    expected = 1;
  };
  tailnetHasNoBootstrapChain = h.hasNone [ "bootstrap_ssh" ] tailnet;
  tailscaleUdpOpen = h.contains "udp dport 41641 accept" tailnet;
  noTailscaleNoUdp = h.hasNone [ "41641" "tailscale0" ] public;

  bootstrapJumpsToChain = h.hasAll [ "jump bootstrap_ssh" "chain bootstrap_ssh {" ] bootstrap;
  bootstrapOpenWithoutDeadline = h.contains "    tcp dport { 22 } accept" bootstrap;
  bootstrapKeepsTailnetPath = h.contains ''iifname "tailscale0" tcp dport { 22 } accept'' bootstrap;
  bootstrapDeadlineInKernel = h.contains "meta time < 1900000000 tcp dport { 22 } accept" bootstrapUntil;
  bootstrapDeadlineNoUndatedAccept = {
    expr = h.countOf "tcp dport { 22 } accept" bootstrapUntil;
    # one deadline-scoped accept + the tailscale0 one
    expected = 2;
  };
  closeCommand = { expr = fw.closeBootstrapCommand "clawdlets"; expected = "flush chain inet clawdlets bootstrap_ssh"; };

  publicOpen = h.contains "tcp dport { 22 } accept" public;
  publicNotBootstrap = h.hasNone [ "bootstrap_ssh" "meta time" ] public;
  publicSourceRanges = h.hasAll [
    "ip saddr { 198.51.100.0/24 } tcp dport { 22 } accept"
    "ip6 saddr { 2001:db8::/32 } tcp dport { 22 } accept"
  ] publicRanges;
  publicSourceRangesNoUnscoped = { expr = h.countOf "\n    tcp dport { 22 } accept" publicRanges; expected = 0; };
  customSshPorts = h.contains "tcp dport { 2222, 22 } accept" (r { sshExposure = { mode = "public"; ports = [ 2222 22 2222 ]; }; });

  extraInbound = h.hasAll [
    "tcp dport { 80, 443 } accept"
    "udp dport { 51820 } accept"
    ''iifname "wg0" tcp dport { 9100 } accept''
    ''iifname { "virbr0" } accept''
  ] (r { inbound = { tcpPorts = [ 80 443 ]; udpPorts = [ 51820 ]; interfaces.wg0.tcpPorts = [ 9100 ]; trustedInterfaces = [ "virbr0" ]; }; });

  establishedAndLoopback = h.hasAll [ "ct state { established, related } accept" ''iifname "lo" accept'' "ct state invalid drop" ] tailnet;

  # --- outbound: egress ---------------------------------------------------------------------------
  smtpBotUidRule = h.contains ''meta skuid { "bot-maren", 991 } meta l4proto { tcp, udp } ${smtpSet} counter reject'' smtp;
  smtpBotCgroupRules = h.hasAll [
    "socket cgroupv2 level 2 @bot_cgroups meta l4proto { tcp, udp } ${smtpSet}"
    "socket cgroupv2 level 3 @bot_cgroups"
    "type cgroupsv2"
  ] smtp;
  smtpHostWideCoversTcpAndUdp = h.contains ''    oifname != "lo" meta l4proto { tcp, udp } ${smtpSet} counter reject'' smtp;
  # Rules that apply to every process come before the cgroup rules, so `clawdlets verify` can
  # decide them statically; bot uids come first of all (also for loopback relays).
  egressRuleOrder = {
    expr =
      let pos = needle: builtins.stringLength (builtins.head (builtins.split (h.escape needle) smtp)); in
      pos "meta skuid { \"bot-maren\", 991 } meta l4proto" < pos "clawdlets: host smtp"
      && pos "clawdlets: host smtp" < pos "socket cgroupv2 level 2"
      && pos "socket cgroupv2 level 3" < pos "oifname \"lo\" accept";
    expected = true;
  };
  smtpBotsOnlyHasNoHostRule = {
    expr = h.countOf "meta l4proto { tcp, udp } ${smtpSet}" smtpBotsOnly;
    expected = 1;
  };
  smtpBotsOnlyNoCgroupSet = h.hasNone [ "bot_cgroups" ] smtpBotsOnly;
  smtpExemptBeforeHostDrop = {
    expr =
      let parts = builtins.split "clawdlets: smtp-exempt users" smtpExempt; in
      h.contains "host smtp" (builtins.elemAt parts 2);
    expected = true;
  };
  smtpOutputPolicyAccept = h.contains "type filter hook output priority filter; policy accept;" smtp;
  smtpNoDirectEgressBlock = h.hasNone [ "bot direct egress" ] smtp;
  proxyBlocksBotsOffHost = h.contains ''meta skuid { "bot-a" } oifname != "lo" counter reject'' proxy;
  proxyBotLoopbackOnlyProxy = h.contains ''meta skuid { "bot-a" } oifname "lo" tcp dport != { 3128 } counter reject'' proxy;
  proxyStillBlocksSmtp = h.contains "host smtp" proxy;
  noneHasNoOutputChain = h.hasNone [ "chain output" "bot_cgroups" "25, 465" ] noEgress;
  outputAllowsReplies = h.contains "chain output {\n    type filter hook output priority filter; policy accept;\n    ct state { established, related } accept" smtp;

  # --- validation: nothing reaches nft text unchecked --------------------------------------------
  rejectsUnknownSshMode = h.throws (r { sshExposure.mode = "open"; });
  rejectsUnknownEgressMode = h.throws (r { egress.mode = "smtp"; });
  rejectsUnknownTailnetMode = h.throws (r { tailnet.mode = "wireguard"; });
  rejectsBadPort = h.throws (r { sshExposure = { mode = "public"; ports = [ 70000 ]; }; });
  rejectsEmptySshPorts = h.throws (r { sshExposure = { mode = "public"; ports = [ ]; }; });
  rejectsInjectedUser = h.throws (r { egress.botUsers = [ ''x" } accept; #'' ]; });
  rejectsInjectedIface = h.throws (r { tailnet.interface = "eth0\" accept"; });
  rejectsLongIface = h.throws (r { tailnet.interface = "abcdefghijklmnop"; });
  rejectsBadCidr = h.throws (r { sshExposure = { mode = "public"; sourceRanges = [ "0.0.0.0/0; flush ruleset" ]; }; });
  rejectsBadDeadline = h.throws (r { sshExposure = { mode = "bootstrap"; bootstrapUntil = "tomorrow"; }; });
  rejectsBadTable = h.throws (r { tableName = "x y"; });
  acceptsNumericUid = h.contains "meta skuid { 0 }" (r { egress.botUsers = [ 0 ]; });
  deterministic = { expr = r { }; expected = r { }; };
  nixosTableMatchesRender = {
    expr = let t = fw.nixosTable { sshExposure.mode = "bootstrap"; egress.botUsers = [ "bot-a" ]; }; in
      [ t.name t.family ("table inet clawdlets {\n" + t.content + "}\n") ];
    expected = [ "clawdlets" "inet" (r { sshExposure.mode = "bootstrap"; egress.botUsers = [ "bot-a" ]; }) ];
  };
}
