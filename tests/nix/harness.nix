# Tiny assertion harness for the pure-Nix unit tests (tests/nix/*.nix). Each test file evaluates to
# an attrset of cases `{ <name> = { expr; expected; }; }` or `{ <name> = bool; }`; run.nix collects
# them and reports every failing case with what it got, so a failure is readable without a REPL.
rec {
  # Substring test without regex escaping.
  contains = needle: hay: builtins.replaceStrings [ needle ] [ "" ] hay != hay;
  # True when forcing `x` completely throws (builtins.throw / assert / type errors are caught).
  throws = x: !(builtins.tryEval (builtins.deepSeq x x)).success;
  # Every needle present / absent.
  hasAll = needles: hay: builtins.all (n: contains n hay) needles;
  hasNone = needles: hay: builtins.all (n: !(contains n hay)) needles;
  # Lines of text, for counting rules.
  countOf = needle: hay: builtins.length (builtins.filter builtins.isList (builtins.split (escape needle) hay));
  escape = s: builtins.replaceStrings
    [ "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" "\\" ]
    [ "[.]" "[*]" "[+]" "[?]" "[(]" "[)]" "\\[" "\\]" "[{]" "[}]" "[|]" "\\^" "[$]" "\\\\" ] s;
}
