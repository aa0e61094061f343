//! The README's tour of the `wsx` command ("## The `wsx` command"), run as written, in order,
//! so that it cannot drift from what the command does.
//!
//! The commands are read from README.md and run through `sh -c` with the `wsx` under test
//! first on `PATH`. Two things are adapted, the same way for every command:
//! - ports: each `wsx serve` listens on a free port (`--port 0`), and a client's URL is
//!   pointed at the server the README started on the port it names: the first `wsx serve`
//!   line on that port. Later lines on a port already taken (`--tls-self-signed`,
//!   `--origin`) are alternatives: each is started on its own, checked and stopped.
//! - what needs a person: a server line is checked the way its comment says a user would use
//!   it (the development certificate through the `wsx connect --ca` command it prints, the
//!   origin check with an allowed and a foreign `Origin`); the interactive `wsx connect` gets
//!   a line on stdin.

mod common;

use std::{
    collections::{HashMap, hash_map::Entry},
    path::Path,
    process::Stdio,
    time::Duration,
};

use common::{Proc, Run, http, port_in, temp_dir, wsx_bin};
use tokio::{io::AsyncWriteExt, process::Command};

/// The bound on the whole tour (the README's bench runs for 10 s).
const TOUR_TIMEOUT: Duration = Duration::from_secs(120);

/// The bound on one client command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(40);

/// The port `wsx serve` listens on without `--port`.
const DEFAULT_PORT: u16 = 8080;

/// The commands of the README section on the `wsx` command, comments removed.
fn tour() -> Vec<String> {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).expect("read README.md");
    let section = readme.split("\n## The `wsx` command").nth(1).expect("README has a section on the `wsx` command");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block in it");
    let commands: Vec<String> = block
        .lines()
        .map(|line| line.split(" #").next().unwrap_or(line).trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    assert!(commands.iter().any(|c| c.starts_with("wsx serve")), "no `wsx serve` in the tour: {commands:?}");
    commands
}

/// The port a `wsx serve` command names (`--port N`), or the default.
fn named_port(command: &str) -> u16 {
    let mut words = command.split_whitespace();
    while let Some(word) = words.next() {
        if word == "--port" || word == "-p" {
            return words.next().and_then(|p| p.parse().ok()).expect("a port after --port");
        }
    }
    DEFAULT_PORT
}

/// `command` listening on a free port instead of the one it names.
fn on_free_port(command: &str) -> String {
    let port = named_port(command);
    if command.split_whitespace().any(|w| w == "--port" || w == "-p") {
        command.replace(&format!(" {port}"), " 0")
    } else {
        format!("{command} --port 0")
    }
}

/// Where the tour's commands run: `wsx` on `PATH`, and a temporary directory of their own
/// (the development certificate goes there).
struct Shell {
    path: String,
    tmp: String,
}

impl Shell {
    fn new() -> Self {
        let bin = Path::new(wsx_bin()).parent().expect("the directory of wsx");
        let path = std::env::join_paths(
            std::iter::once(bin.to_path_buf())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .expect("PATH");
        let tmp = temp_dir("tour");
        Self { path: path.into_string().expect("UTF-8 PATH"), tmp: tmp.to_str().expect("UTF-8 path").to_owned() }
    }

    /// Start a server command; returns it with the port it listens on.
    async fn start(&self, command: &str) -> (Proc, u16) {
        let exec = format!("exec {command}");
        let proc = Proc::spawn_with_env("sh", &["-c", &exec], &[("PATH", &self.path), ("TMPDIR", &self.tmp)]);
        let line = proc.stderr_line(&format!("`{command}` to listen"), |l| l.contains("listening on ")).await;
        (proc, port_in(&line))
    }

    /// Run a command to its end with `input` on stdin.
    async fn run(&self, command: &str, input: &str) -> Run {
        let mut child = Command::new("sh")
            .args(["-c", command])
            .env("PATH", &self.path)
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sh");
        let mut stdin = child.stdin.take().expect("stdin piped");
        stdin.write_all(input.as_bytes()).await.expect("write stdin");
        drop(stdin);
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{command}` did not finish"))
            .expect("wait for sh");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Run a command that must succeed.
    async fn succeed(&self, command: &str, input: &str) -> Run {
        let run = self.run(command, input).await;
        assert_eq!(run.code, Some(0), "`{command}` failed:\n{}\n{}", run.stdout, run.stderr);
        run
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_readme_tour_works_in_sequence() {
    tokio::time::timeout(TOUR_TIMEOUT, run_tour()).await.expect("the tour timed out");
}

async fn run_tour() {
    let shell = Shell::new();
    // The README's port → the running server the tour started there, and its real port.
    let mut servers: HashMap<u16, (Proc, u16)> = HashMap::new();
    for command in tour() {
        eprintln!("tour: {command}");
        if command.starts_with("wsx serve") {
            let named = named_port(&command);
            let (proc, port) = shell.start(&on_free_port(&command)).await;
            match servers.entry(named) {
                Entry::Occupied(_) => check_alternative(&shell, &command, &proc, port).await,
                Entry::Vacant(slot) => {
                    let page = http(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
                    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "`{command}` serves no page: {page:.300}");
                    slot.insert((proc, port));
                }
            }
            continue;
        }
        let named = servers
            .keys()
            .copied()
            .find(|named| command.contains(&format!("127.0.0.1:{named}")))
            .unwrap_or_else(|| panic!("`{command}` talks to no server the tour started"));
        let real = servers[&named].1;
        let command = command.replace(&format!("127.0.0.1:{named}"), &format!("127.0.0.1:{real}"));
        let run = shell.succeed(&command, "hello from the tour\n").await;
        check_client(&command, &run);
    }
    let _ = std::fs::remove_dir_all(&shell.tmp);
}

/// What a client command's output must show.
fn check_client(command: &str, run: &Run) {
    if command.contains("wsx bench") {
        assert!(run.stdout.contains(" msg/s)"), "{command}: no rate in\n{}", run.stdout);
    } else if command.contains("--json") {
        let opened = run
            .stdout
            .lines()
            .any(|line| serde_json::from_str::<serde_json::Value>(line).is_ok_and(|event| event["type"] == "open"));
        assert!(opened, "{command}: no open event in\n{}", run.stdout);
    } else {
        // The classic server greets every client.
        assert!(run.stdout.contains("< ho!"), "{command}:\n{}", run.stdout);
    }
}

/// A server line on a port the tour already serves: check what its comment promises.
async fn check_alternative(shell: &Shell, command: &str, proc: &Proc, port: u16) {
    if command.contains("--tls-self-signed") {
        // Trust the certificate the way the server says to.
        let hint = proc.stderr_line("the --ca hint", |l| l.contains("wsx connect --ca")).await;
        let connect = hint.trim();
        assert!(connect.contains(&format!(":{port}/")), "the hint names another port: {connect}");
        let run = shell.succeed(connect, "over TLS\n").await;
        assert!(run.stdout.contains("< ho!"), "{connect}:\n{}", run.stdout);
    } else if let Some(origin) = command.split("--origin ").nth(1).and_then(|rest| rest.split_whitespace().next()) {
        let url = format!("ws://127.0.0.1:{port}");
        shell.succeed(&format!("wsx connect --origin {origin} {url}"), "allowed\n").await;
        let refused = shell.run(&format!("wsx connect --origin https://elsewhere.example {url}"), "").await;
        assert_eq!(refused.code, Some(3), "a foreign origin must be refused:\n{}", refused.stderr);
        assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    } else if command.contains("--memory-budget") {
        // The caps take their values (a bad size would have stopped the server); under them a
        // client is served as usual.
        let run = shell.succeed(&format!("wsx connect ws://127.0.0.1:{port}"), "within the caps\n").await;
        assert!(run.stdout.contains("< ho!"), "{command}:\n{}", run.stdout);
    } else {
        panic!("no check for the tour's `{command}`: add one");
    }
}
