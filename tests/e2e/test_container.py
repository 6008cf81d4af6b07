"""Container mode: the whole configuration from the environment (no ini
file), secrets from files named by *_FILE variables, logs on stderr, and
what foreground delivery guarantees when the container's main process
exits right after submitting: exit 0 comes after the relay's 250."""
import os
import subprocess

from conftest import RELAY_USER, SECRET, RELAYQ_BIN, fmt

RCPT = "rcpt@example.net"
MSG = b"From: app@example.com\nSubject: from a container\n\nhello\n"


def container_env(tmp_path, relay, certs, **extra):
    """An environment as a compose file would give it: no ini at all."""
    secret = tmp_path / "relay_password"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    user = tmp_path / "relay_user"
    user.write_text(RELAY_USER + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
    env.update({
        "RELAYQ_CONFIG": "",                        # environment alone
        "RELAYQ_RELAY_HOST": "127.0.0.1",
        "RELAYQ_RELAY_PORT": str(relay.port),
        "RELAYQ_RELAY_CA_FILE": certs.ca,
        "RELAYQ_RELAY_USER_FILE": str(user),
        "RELAYQ_RELAY_PASSWORD_FILE": str(secret),
        "RELAYQ_RELAY_TIMEOUT": "10",
        "RELAYQ_QUEUE_DIR": str(tmp_path / "spool"),
        "RELAYQ_SENDER_DOMAIN": "example.com",
        "RELAYQ_LOG_TARGET": "auto",
    })
    env.update(extra)
    return env


def run(args, env, stdin=MSG):
    cp = subprocess.run([RELAYQ_BIN, *args], input=stdin, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        timeout=60)
    for out in (cp.stdout, cp.stderr):
        assert SECRET.encode() not in out, "password leaked\n" + fmt(cp)
    return cp


def test_environment_only_config_delivers(tmp_path, relay, certs):
    r = relay()
    env = container_env(tmp_path, r, certs)
    cp = run(["-i", RCPT], env)
    # Foreground: exit 0 only once the relay answered 250.
    assert cp.returncode == 0, fmt(cp)
    assert len(r.messages) == 1, "exit 0 before the relay had it"
    m = r.messages[0]
    assert m["rcpt_tos"] == [RCPT]
    assert m["auth_login"] == RELAY_USER        # the user came from a file
    assert not os.listdir(tmp_path / "spool" / "queue")


def test_value_file_errors_name_the_variable(tmp_path, relay, certs):
    r = relay()
    env = container_env(tmp_path, r, certs,
                        RELAYQ_RELAY_USER_FILE=str(tmp_path / "missing"))
    cp = run(["-i", RCPT], env)
    assert cp.returncode == 78, fmt(cp)
    assert b"RELAYQ_RELAY_USER_FILE" in cp.stderr
    assert len(r.messages) == 0


def test_relay_down_keeps_the_message_and_says_so(tmp_path, relay, certs):
    """The container may exit right away: with the relay down the message
    is in the spool (a volume survives the container) and stderr says it
    was deferred; exit 0 is the sendmail contract for 'queued'."""
    r = relay()
    env = container_env(tmp_path, r, certs)
    r.stop()
    cp = run(["-i", RCPT], env)
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" in cp.stderr, fmt(cp)
    assert len(os.listdir(tmp_path / "spool" / "queue")) == 2  # ID, ID.state


def test_no_dev_log_means_stderr(tmp_path, relay, certs):
    """target = auto logs to stderr when there is no syslog socket: run in
    a mount namespace whose /dev/log is gone."""
    r = relay()
    env = container_env(tmp_path, r, certs)
    script = ('mount -t tmpfs none /dev/shm 2>/dev/null; '
              'if [ -e /dev/log ]; then mount --bind /dev/null /dev/log '
              '2>/dev/null || umount /dev/log 2>/dev/null; fi; '
              'exec "$0" "$@"')
    cp = subprocess.run(["unshare", "-m", "sh", "-c", script, RELAYQ_BIN,
                         "-i", RCPT], input=MSG, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        timeout=60)
    assert cp.returncode == 0, fmt(cp)
    assert b"status=sent" in cp.stderr, fmt(cp)


def test_daemon_sidecar_drains_on_sigterm(tmp_path, relay, certs):
    """relayq -q1m as a container's entrypoint: queued mail goes out, and
    SIGTERM (docker stop) ends it cleanly with exit 0."""
    r = relay()
    env = container_env(tmp_path, r, certs)
    for i in range(3):
        cp = run(["-odq", "-i", RCPT], env)
        assert cp.returncode == 0, fmt(cp)
    d = subprocess.Popen([RELAYQ_BIN, "-q1m"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        r.wait_for_messages(3, timeout=15)
    finally:
        d.terminate()
    out, err = d.communicate(timeout=15)
    assert d.returncode == 0, err.decode()
    assert SECRET.encode() not in err
    assert b"queue runner stopping" in err
    assert not os.listdir(tmp_path / "spool" / "queue")
