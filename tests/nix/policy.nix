# Unit tests of modules/lib/policy.nix: every insecure combination is refused with a message that
# names the option to change, and the safe defaults pass.
let
  p = import ../../modules/lib/policy.nix;
  h = import ./harness.nix;
  fails = p.failures;
  failsWith = needle: cfg: builtins.any (m: h.contains needle m) (fails cfg);
  bot = groups: { bots.maren = { user = "bot-maren"; inherit groups; }; };
in
{
  defaultsPass = { expr = fails { }; expected = [ ]; };
  tailnetWithTailscalePasses = { expr = fails { sshExposure.mode = "tailnet"; tailnet.mode = "tailscale"; }; expected = [ ]; };
  tailnetWithoutTailscaleLocksOut = failsWith "lock yourself out" { sshExposure.mode = "tailnet"; tailnet.mode = "none"; };
  tailnetLockoutNamesFix = failsWith ''clawdlets.tailnet.mode = "tailscale"'' { sshExposure.mode = "tailnet"; tailnet.mode = "none"; };
  bootstrapWithoutTailscalePasses = { expr = fails { sshExposure.mode = "bootstrap"; tailnet.mode = "none"; }; expected = [ ]; };
  publicNeedsAck = failsWith "acknowledgePublic = true" { sshExposure.mode = "public"; };
  publicWithAckPasses = { expr = fails { sshExposure = { mode = "public"; acknowledgePublic = true; }; }; expected = [ ]; };
  deadlineOnlyForBootstrap = failsWith "only applies to mode" { sshExposure = { mode = "tailnet"; bootstrapUntil = 1900000000; }; };
  sshPortInNixosFirewall = failsWith "bypass" { firewall.allowedTCPPorts = [ 80 22 ]; };
  sshPortInNixosFirewallOkWhenPublic = { expr = fails { sshExposure = { mode = "public"; acknowledgePublic = true; }; firewall.allowedTCPPorts = [ 22 ]; }; expected = [ ]; };
  nixosFirewallRefused = failsWith "networking.firewall.enable = true" { firewall.nixosFirewall = true; };
  noKeysLocksOut = failsWith "nobody could log in" { ssh.authorizedKeyCount = 0; };
  passwordAuthRefused = failsWith "PasswordAuthentication" { ssh.passwordAuthentication = true; };
  rootPasswordLoginRefused = failsWith "PermitRootLogin" { ssh.permitRootLogin = "yes"; };
  rootProhibitPasswordOk = { expr = fails { ssh.permitRootLogin = "prohibit-password"; }; expected = [ ]; };
  botInGroupPasses = { expr = fails (bot [ "bot-maren" "clf-bots" ]); expected = [ ]; };
  botOutsideGroupRefused = failsWith ''bot "maren" runs as user "bot-maren", which is not in group "clf-bots"'' (bot [ "bot-maren" ]);
  botGroupIsConfigurable = failsWith ''not in group "bots2"'' ((bot [ "clf-bots" ]) // { botGroup = "bots2"; });
  emptyProxyAllowlistRefused = failsWith "empty allowlist" { egress.mode = "proxy-allowlist"; };
  perBotAllowlistIsEnough = { expr = fails { egress = { mode = "proxy-allowlist"; bots.maren.allow = [ "api.github.com" ]; }; }; expected = [ ]; };
  globalAllowlistIsEnough = { expr = fails { egress = { mode = "proxy-allowlist"; allowedDomains = [ ".discord.com" ]; }; }; expected = [ ]; };
  botCannotBeSmtpExempt = failsWith "cannot be in clawdlets.egress.smtp.exemptUsers" ((bot [ "clf-bots" ]) // { egress.exemptUsers = [ "bot-maren" ]; });
  bootstrapWarnsLoudly = { expr = builtins.length (p.warnings { sshExposure.mode = "bootstrap"; }); expected = 1; };
  bootstrapWarningNamesDeadline = h.contains "1900000000" (builtins.head (p.warnings { sshExposure = { mode = "bootstrap"; bootstrapUntil = 1900000000; }; }));
  worldOpenPublicWarns = h.contains "whole internet" (builtins.head (p.warnings { sshExposure = { mode = "public"; acknowledgePublic = true; }; }));
  egressNoneWarns = h.contains "egress.mode = \"none\"" (builtins.head (p.warnings { egress.mode = "none"; }));
  tailnetNoWarnings = { expr = p.warnings { }; expected = [ ]; };
  bootstrapWithoutTailnetWarnsOfLockout = builtins.any (w: h.contains "console only" w) (p.warnings { sshExposure.mode = "bootstrap"; tailnet.mode = "none"; });
  bootstrapWithTailnetNoLockoutWarning = !(builtins.any (w: h.contains "console only" w) (p.warnings { sshExposure.mode = "bootstrap"; }));
}
