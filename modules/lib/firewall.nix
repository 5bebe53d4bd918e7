# Pure nftables ruleset generator for the host's security policy: inbound SSH exposure, the tailnet
# port and outbound (egress) restrictions for bot users. Builtins only, no nixpkgs, so it is
# evaluated and tested with plain `nix-instantiate --eval` (tests/nix/firewall.nix) and its output
# is loaded into real nft by agent/tests/integration/nix_rules.rs.
#
# It must not decide *whether* a combination is safe (policy.nix does that) and must not touch
# anything outside its own `inet clawdlets` table: other tables (NixOS' own, docker, tailscale's)
# stay as they are. Every value that ends up in the ruleset text is validated here, so a hostile
# or mistyped option can never inject nft syntax.
let
  inherit (builtins)
    all any attrNames concatStringsSep elem filter isInt isString length map match throw toString
    typeOf;

  # --- validation -----------------------------------------------------------------------------

  fail = msg: throw "clawdlets firewall: ${msg}";

  checkPort = what: p:
    if isInt p && p >= 1 && p <= 65535 then p
    else fail "${what}: ${toString p} is not a port number (1-65535)";

  checkIface = i:
    if isString i && match "[A-Za-z0-9_.@-]{1,15}" i != null then i
    else fail "interface name '${toString i}' is invalid (1-15 of A-Z a-z 0-9 _ . @ -)";

  # A user is a uid (int) or a POSIX user name; names are resolved by nft when the ruleset loads
  # (after NixOS activation created the users).
  checkUser = u:
    if isInt u && u >= 0 then u
    else if isString u && match "[a-z_][a-z0-9_-]{0,30}[$]?" u != null then u
    else fail "user '${toString u}' is neither a uid nor a valid user name";

  v4re = "([0-9]{1,3}[.]){3}[0-9]{1,3}(/[0-9]{1,2})?";
  v6re = "[0-9a-fA-F:.]*:[0-9a-fA-F:.]*(/[0-9]{1,3})?";
  isV4 = c: match v4re c != null;
  isV6 = c: match v6re c != null;
  checkCidr = c:
    if isString c && (isV4 c || isV6 c) then c
    else fail "source range '${toString c}' is not an IPv4 or IPv6 address/CIDR";

  checkEnum = what: allowed: v:
    if elem v allowed then v
    else fail "${what} '${toString v}' is not one of: ${concatStringsSep ", " allowed}";

  checkTime = t:
    if t == null || (isInt t && t > 0) then t
    else fail "sshExposure.bootstrapUntil must be null or a Unix time in seconds, got ${typeOf t}";

  # --- rendering helpers ----------------------------------------------------------------------

  uniq = list: builtins.foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ] list;
  renderUser = u: if isInt u then toString u else "\"${u}\"";
  set = items: "{ ${concatStringsSep ", " items} }";
  portSet = ports: set (map toString ports);
  userSet = users: set (map renderUser users);
  ifaceSet = ifs: set (map (i: "\"${i}\"") ifs);
  lines = ls: concatStringsSep "\n" (filter (l: l != "") ls);
  indent = pre: ls: map (l: if l == "" then "" else pre + l) ls;

  # Default values, so callers (and tests) pass only what they care about.
  defaults = {
    tableName = "clawdlets";
    sshExposure = {
      mode = "tailnet";
      ports = [ 22 ];
      bootstrapUntil = null;
      sourceRanges = [ ];
    };
    tailnet = {
      mode = "tailscale";
      interface = "tailscale0";
      port = 41641;
    };
    egress = {
      mode = "smtp-only";
      smtpPorts = [ 25 465 587 2525 ];
      smtpHostWide = true;
      exemptUsers = [ ];
      botUsers = [ ];
      botCgroupSet = true;
      botLoopbackTcpPorts = null;
    };
    inbound = {
      tcpPorts = [ ];
      udpPorts = [ ];
      interfaces = { };
      trustedInterfaces = [ ];
    };
  };

  # Normalises a (partial) policy attrset: fills defaults and validates every field.
  normalize = p:
    let
      s = defaults.sshExposure // (p.sshExposure or { });
      t = defaults.tailnet // (p.tailnet or { });
      e = defaults.egress // (p.egress or { });
      i = defaults.inbound // (p.inbound or { });
      tableName = p.tableName or defaults.tableName;
    in
    {
      tableName =
        if match "[a-z][a-z0-9_-]{0,30}" tableName != null then tableName
        else fail "table name '${tableName}' is invalid";
      sshExposure = {
        mode = checkEnum "sshExposure.mode" [ "bootstrap" "tailnet" "public" ] s.mode;
        ports =
          if s.ports == [ ] then fail "sshExposure.ports must not be empty"
          else uniq (map (checkPort "sshExposure.ports") s.ports);
        bootstrapUntil = checkTime s.bootstrapUntil;
        sourceRanges = map checkCidr s.sourceRanges;
      };
      tailnet = {
        mode = checkEnum "tailnet.mode" [ "tailscale" "none" ] t.mode;
        interface = checkIface t.interface;
        port = checkPort "tailnet.port" t.port;
      };
      egress = {
        mode = checkEnum "egress.mode" [ "smtp-only" "proxy-allowlist" "none" ] e.mode;
        smtpPorts = uniq (map (checkPort "egress.smtpPorts") e.smtpPorts);
        smtpHostWide = if builtins.isBool e.smtpHostWide then e.smtpHostWide
          else fail "egress.smtpHostWide must be a boolean";
        exemptUsers = uniq (map checkUser e.exemptUsers);
        botUsers = uniq (map checkUser e.botUsers);
        botCgroupSet = e.botCgroupSet;
        botLoopbackTcpPorts =
          if e.botLoopbackTcpPorts == null then null
          else uniq (map (checkPort "egress.botLoopbackTcpPorts") e.botLoopbackTcpPorts);
      };
      inbound = {
        tcpPorts = uniq (map (checkPort "inbound.tcpPorts") i.tcpPorts);
        udpPorts = uniq (map (checkPort "inbound.udpPorts") i.udpPorts);
        interfaces = builtins.mapAttrs
          (name: v: {
            tcpPorts = uniq (map (checkPort "inbound.interfaces.${name}.tcpPorts") (v.tcpPorts or [ ]));
            udpPorts = uniq (map (checkPort "inbound.interfaces.${name}.udpPorts") (v.udpPorts or [ ]));
          })
          (builtins.listToAttrs (map (n: { name = checkIface n; value = i.interfaces.${n}; })
            (attrNames i.interfaces)));
        trustedInterfaces = uniq (map checkIface i.trustedInterfaces);
      };
    };

  # --- the ruleset ----------------------------------------------------------------------------

  # Inbound SSH rules for the mode. The bootstrap accept lives in its own chain so the runtime
  # expiry unit can close it with `nft flush chain inet clawdlets bootstrap_ssh` without touching
  # anything else, and, when a deadline is known at build time, the kernel itself stops matching
  # it (`meta time <`), so expiry does not depend on any unit running.
  sshRules = n:
    let
      s = n.sshExposure;
      ports = portSet s.ports;
      v4 = filter isV4 s.sourceRanges;
      v6 = filter (c: !(isV4 c)) s.sourceRanges;
      deadline = if s.bootstrapUntil == null then "" else "meta time < ${toString s.bootstrapUntil} ";
      # The "from anywhere allowed by sourceRanges" accept, with an optional prefix.
      openRules = prefix:
        if s.sourceRanges == [ ] then [ "${prefix}tcp dport ${ports} accept" ]
        else
          (if v4 == [ ] then [ ] else [ "ip saddr ${set v4} ${prefix}tcp dport ${ports} accept" ])
          ++ (if v6 == [ ] then [ ] else [ "ip6 saddr ${set v6} ${prefix}tcp dport ${ports} accept" ]);
      viaTailnet =
        if n.tailnet.mode == "tailscale"
        then [ "iifname \"${n.tailnet.interface}\" tcp dport ${ports} accept" ]
        else [ ];
    in
    {
      input =
        viaTailnet
        ++ (if s.mode == "public" then openRules ""
        else if s.mode == "bootstrap" then [ "jump bootstrap_ssh" ]
        else [ ]);
      bootstrapChain = if s.mode == "bootstrap" then openRules deadline else [ ];
    };

  tailnetRules = n:
    if n.tailnet.mode == "tailscale"
    then [ "udp dport ${toString n.tailnet.port} accept" ]
    else [ ];

  extraInbound = n:
    let i = n.inbound; in
    (if i.trustedInterfaces == [ ] then [ ] else [ "iifname ${ifaceSet i.trustedInterfaces} accept" ])
    ++ (if i.tcpPorts == [ ] then [ ] else [ "tcp dport ${portSet i.tcpPorts} accept" ])
    ++ (if i.udpPorts == [ ] then [ ] else [ "udp dport ${portSet i.udpPorts} accept" ])
    ++ builtins.concatLists (map
      (ifn:
        let v = i.interfaces.${ifn}; in
        (if v.tcpPorts == [ ] then [ ] else [ "iifname \"${ifn}\" tcp dport ${portSet v.tcpPorts} accept" ])
        ++ (if v.udpPorts == [ ] then [ ] else [ "iifname \"${ifn}\" udp dport ${portSet v.udpPorts} accept" ]))
      (attrNames i.interfaces));

  reject = "reject with icmpx type admin-prohibited";

  # Outbound rules. Bots are matched by socket owner uid (always known for locally generated
  # packets) and, as a second key, by the cgroup of units that systemd adds to @bot_cgroups via
  # NFTSet= (covers DynamicUser units and helpers running under another uid in the bot's unit).
  egressRules = n:
    let
      e = n.egress;
      smtp = "meta l4proto { tcp, udp } th dport ${portSet e.smtpPorts}";
      byUid = if e.botUsers == [ ] then [ ] else [ "meta skuid ${userSet e.botUsers}" ];
      # The cgroup set holds unit cgroups; services sit at level 2 (system.slice/x.service) and
      # at level 3 when placed in a sub-slice.
      byCgroup = if e.botCgroupSet then
        map (level: "socket cgroupv2 level ${toString level} @bot_cgroups") [ 2 3 ]
      else [ ];
      smtpFor = ms: map (m: "${m} ${smtp} counter ${reject} comment \"clawdlets: bot smtp\"") ms;
      # Host-wide mail block for traffic leaving the host (a local relay on loopback stays
      # reachable for non-bots). Placed before the cgroup rules so that what applies to every
      # process is decided by rules whose outcome is visible without knowing cgroups.
      hostSmtp =
        if e.smtpHostWide then
          (if e.exemptUsers == [ ] then [ ]
          else [ "meta skuid ${userSet e.exemptUsers} oifname != \"lo\" ${smtp} accept comment \"clawdlets: smtp-exempt users\"" ])
          ++ [ "oifname != \"lo\" ${smtp} counter ${reject} comment \"clawdlets: host smtp\"" ]
        else [ ];
      proxyRules = ms:
        if e.mode != "proxy-allowlist" then [ ]
        else
          # Bots reach loopback only, there only these TCP ports (the proxy); loopback UDP
          # (a local resolver) stays open.
          (if e.botLoopbackTcpPorts == null then [ ] else
            map (m: "${m} oifname \"lo\" tcp dport != ${portSet e.botLoopbackTcpPorts} counter ${reject} comment \"clawdlets: bot loopback\"") ms)
          ++ map (m: "${m} oifname != \"lo\" counter ${reject} comment \"clawdlets: bot direct egress\"") ms;
    in
    if e.mode == "none" then [ ]
    # Replies and flows already admitted pass; the rules below judge new flows only (a bot's
    # gateway answering on loopback must not be cut off by the loopback rule).
    else
      [ "ct state { established, related } accept" ]
      # Bots never send mail, not even through a local relay: uid first (always decidable)...
      ++ smtpFor byUid
      ++ hostSmtp
      # ...then the unit cgroups (covers other uids inside a bot unit).
      ++ smtpFor byCgroup
      ++ proxyRules byUid
      ++ proxyRules byCgroup
      ++ [ "oifname \"lo\" accept" ];

  # The lines inside `table inet <name> { ... }` (indented by two spaces).
  bodyLines = p:
    let
      n = normalize p;
      ssh = sshRules n;
      out = egressRules n;
      needCgroupSet = n.egress.mode != "none" && n.egress.botCgroupSet;
    in
    (if needCgroupSet then [
      "  # Filled at runtime by systemd (NFTSet=cgroup:inet:${n.tableName}:bot_cgroups on bot units)."
      "  set bot_cgroups {"
      "    type cgroupsv2"
      "  }"
    ] else [ ])
    ++ [
      "  chain input {"
      "    type filter hook input priority filter; policy drop;"
    ]
    ++ indent "    " ([
      "ct state invalid drop"
      "ct state { established, related } accept"
      "iifname \"lo\" accept"
      # ICMP needed for a working host (PMTU, ND, errors); echo is rate limited.
      "ip protocol icmp icmp type { destination-unreachable, time-exceeded, parameter-problem } accept"
      "ip protocol icmp icmp type echo-request limit rate 20/second accept"
      "meta l4proto ipv6-icmp icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept"
      "meta l4proto ipv6-icmp icmpv6 type echo-request limit rate 20/second accept"
      "meta nfproto ipv6 udp dport 546 ip6 saddr fe80::/10 accept"
    ]
    ++ tailnetRules n
    ++ ssh.input
    ++ extraInbound n
    ++ [ "counter comment \"clawdlets: inbound dropped by policy\"" ])
    ++ [ "  }" ]
    ++ (if n.sshExposure.mode == "bootstrap" then
      [ "  # Bootstrap SSH: expires (meta time) and is flushed by clawdlets-bootstrap-expiry.service." "  chain bootstrap_ssh {" ]
      ++ indent "    " ssh.bootstrapChain
      ++ [ "  }" ]
    else [ ])
    ++ (if out == [ ] then [ ] else
      [
        "  chain output {"
        "    type filter hook output priority filter; policy accept;"
      ]
      ++ indent "    " out
      ++ [ "  }" ]);

  # The complete `table inet <name>` text; `nft -f` of it touches no other table.
  render = p:
    lines ([ "table inet ${(normalize p).tableName} {" ] ++ bodyLines p ++ [ "}" ]) + "\n";

  # For NixOS' networking.nftables.tables.<name>: the table body, which NixOS wraps in
  # `table inet <name> { ... }` after deleting the previous version of that table only.
  nixosTable = p: {
    name = (normalize p).tableName;
    family = "inet";
    content = lines (bodyLines p) + "\n";
  };
in
{
  inherit defaults normalize render nixosTable;
  # The nft command the bootstrap expiry unit runs to close bootstrap SSH.
  closeBootstrapCommand = tableName: "flush chain inet ${tableName} bootstrap_ssh";
}
