"""A web server may spawn keygated itself and hand it the FastCGI socket on
fd 0: keygated then serves on that socket and ignores `listen`."""

import os
import socket
import subprocess

import keygate_stack as ks


def test_serves_on_the_socket_inherited_on_fd_0(workdir, pg, fresh_database):
    d = workdir.subdir("kg")
    kg = ks.Keygated(d, pg.conninfo_for(fresh_database), migrate=True,
                     start=False, workers=2,
                     listen="unix:" + os.path.join(d, "unused.sock"))
    path = os.path.join(d, "spawned.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    err = open(os.path.join(d, "spawned.stderr"), "wb")
    proc = subprocess.Popen([ks.KEYGATED, "--config", kg.config_path],
                            stdin=listener.fileno(), stdout=err, stderr=err,
                            env=ks.clean_env(), start_new_session=True)
    listener.close()
    web = None
    try:
        web = ks.Lighttpd(d, path)
        r = ks.request("GET", web.url + "/health")
        assert r.status == 200, r.body
        assert r.json["database"] == "connected"
        assert not os.path.exists(os.path.join(d, "unused.sock"))
        with open(os.path.join(d, "spawned.stderr")) as f:
            assert "inherited on fd 0" in f.read()
    finally:
        if web is not None:
            web.close()
        proc.terminate()
        assert proc.wait(15) == 0
        err.close()
        kg.close()
