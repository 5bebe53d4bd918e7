# The systemd sandbox every clawdlets-managed long-running service starts from (bots, the egress
# proxy, the orchestrator). One attrset so the units cannot drift apart; each unit adds what its
# job needs (address families, W^X, private network) on top with `//`. Pure: builtins only.
{
  NoNewPrivileges = true;
  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  PrivateTmp = true;
  PrivateDevices = true;
  PrivateMounts = true;
  ProtectSystem = "strict";
  ProtectHome = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectClock = true;
  ProtectHostname = true;
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  RemoveIPC = true;
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" "~@privileged" ];
  UMask = "0077";
  LimitCORE = 0;
}
