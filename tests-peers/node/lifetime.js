'use strict';
// Shared lifetime rules for the wsx test peers: every peer ends by itself.
//
// - after `seconds` (default 120, or WSX_PEER_TIMEOUT) it exits with code 3;
// - if stdin is a pipe or a socket (the Rust test spawned it with
//   `Stdio::piped()`), it exits with code 0 when that pipe closes, i.e. when
//   the test drops the child's stdin or dies. A stdin that is /dev/null or a
//   terminal is not watched, so `node echo_server.js </dev/null` keeps running.

const fs = require('fs');

function stdinIsPipe() {
  try {
    const st = fs.fstatSync(0);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false; // fd 0 closed
  }
}

function defaultTimeout() {
  const env = Number(process.env.WSX_PEER_TIMEOUT);
  return Number.isFinite(env) && env > 0 ? env : 120;
}

// Installs the exit timer and the stdin watch. `onExit(reason)` may clean up
// (it must not block); `stdinExitCode` is the exit code when stdin closes
// (0 for servers: being told to stop is success; 1 for clients: unfinished).
function install(name, seconds, onExit, stdinExitCode = 0) {
  const secs = seconds > 0 ? seconds : defaultTimeout();
  const timer = setTimeout(() => {
    process.stderr.write(`${name}: exiting after ${secs} s (time limit)\n`);
    if (onExit) onExit('timeout');
    process.exit(3);
  }, secs * 1000);
  timer.unref();
  if (stdinIsPipe()) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => {
      if (onExit) onExit('stdin');
      process.exit(stdinExitCode);
    });
    process.stdin.on('error', () => {});
    process.stdin.resume();
  }
  return timer;
}

module.exports = { install, defaultTimeout };
