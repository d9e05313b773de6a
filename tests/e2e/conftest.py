"""Fixtures for keygate's end-to-end tests.

    workdir     one /tmp directory for the whole run
    pg          one PostgreSQL cluster shared by the whole run
    stack       keygated (3 workers, migrated, dev key seeded) behind
                lighttpd over the shared cluster, shared by a test module
    make_stack  a factory for a test's own stack, on its own database
    web_server  the name of each web server in turn (lighttpd, apache,
                nginx): a module using it runs once behind each
    web_stack   like `stack`, behind each web server in turn
    pooled_stack  a stack on its own database whose providers are a
                mock_llm.MockLLM (the module's `llm`) and whose operator
                pool key is ks.POOL_KEY
    make_keygated  a factory for a bare keygated (no lighttpd)
    fresh_database  a new, empty database in the shared cluster
    own_pg      a test's own PostgreSQL cluster, for tests that stop it
    mock        the mock LLM providers (mock_llm.MockLLM), shared by a
                test module
    fresh_mock  the module's `mock`, reset (a module that defines its own
                `mock` gets that one)
    llm         mock_llm.MockLLM, every provider on loopback, per module
    llm_stack   a stack (2 workers) whose providers are all `llm`, with
                credits enforced and 100 credits on the root tenant, per
                module

When a test fails, the tail of every keygated and web-server log that was
running during the test is added to its report.
"""

import os
import time

import pytest

import keygate_stack as ks
from mock_llm import MockLLM


def pytest_report_header(config):
    return ["keygate: keygated=%s sql=%s lighttpd.conf=%s" % (
        ks.KEYGATED, ks.SQL_DIR, ks.LIGHTTPD_CONF)]


def pytest_configure(config):
    ks.exit_on_sigterm()


def pytest_sessionstart(session):
    missing = [p for p in (ks.KEYGATED, ks.KEYGATECTL, ks.LIGHTTPD_CONF)
               if not os.path.exists(p)]
    if missing:
        pytest.exit("not built or not found: %s (set KEYGATE_BUILDDIR and "
                    "KEYGATE_SRCDIR)" % ", ".join(missing), returncode=99)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.keygate_started = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or rep.when == "teardown":
        return
    since = getattr(item, "keygate_started", 0)
    for obj in ks.instances:
        running = obj.proc is not None and obj.proc.poll() is None
        if running or obj.started_at >= since - 1:
            rep.sections.append(("log tail: %r" % obj, obj.log_tail()))


@pytest.fixture(scope="session")
def workdir():
    wd = ks.Workdir()
    yield wd
    ks.close_all()
    wd.close()


@pytest.fixture(scope="session")
def pg(workdir):
    cluster = ks.PgCluster(workdir.subdir("pg"))
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def stack(workdir, pg):
    s = ks.Stack(workdir.subdir("kg"), pg, workers=3)
    yield s
    s.close()


@pytest.fixture(scope="module", params=list(ks.WEB_SERVERS))
def web_server(request):
    return request.param


@pytest.fixture(scope="module")
def web_stack(workdir, pg, web_server):
    s = ks.Stack(workdir.subdir("kg"), pg, dbname=new_dbname(web_server),
                 web=web_server, workers=3)
    yield s
    s.close()


@pytest.fixture(scope="module")
def pooled_stack(workdir, pg, llm):
    cfg = dict(llm.config())
    cfg.update(validate_llm_keys="false", pool_openrouter_key=ks.POOL_KEY,
               workers=2)
    s = ks.Stack(workdir.subdir("kg"), pg, dbname=new_dbname("pool"), **cfg)
    yield s
    s.close()


_db_counter = [0]


def new_dbname(prefix="kg"):
    _db_counter[0] += 1
    return "%s_%d_%d" % (prefix, os.getpid(), _db_counter[0])


def _makes(build):
    """A fixture's factory: each call builds with build(*args, **kw), and
    whatever was built is closed, newest first, when the fixture ends."""
    made = []

    def make(*args, **kw):
        made.append(build(*args, **kw))
        return made[-1]
    yield make
    for obj in reversed(made):
        obj.close()


@pytest.fixture
def make_stack(workdir, pg):
    """make_stack(pg=None, **config) -> a Stack on a new database."""
    def build(cluster=None, **config):
        return ks.Stack(workdir.subdir("kg"), cluster or pg,
                        dbname=new_dbname(), **config)
    yield from _makes(build)


@pytest.fixture
def make_keygated(workdir, pg):
    """make_keygated(dbname, **kw) -> a Keygated on `dbname` in the shared
    cluster, in its own directory; not started unless start=True."""
    def build(dbname, start=False, **kw):
        return ks.Keygated(workdir.subdir("kg"), pg.conninfo_for(dbname),
                           start=start, **kw)
    yield from _makes(build)


@pytest.fixture
def fresh_database(pg):
    """The name of a new, empty database in the shared cluster."""
    name = new_dbname("empty")
    pg.create_database(name)
    return name


@pytest.fixture
def own_pg(workdir):
    cluster = ks.PgCluster(workdir.subdir("pg"))
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def mock():
    """A mock LLM provider (mock_llm.MockLLM) for the module's tests."""
    with MockLLM() as m:
        yield m


@pytest.fixture(scope="module")
def llm():
    with MockLLM() as m:
        yield m


@pytest.fixture
def fresh_mock(mock):
    mock.reset()
    yield mock


@pytest.fixture(scope="module")
def llm_stack(workdir, pg, llm):
    s = ks.Stack(workdir.subdir("kg"), pg, dbname=new_dbname("llm"),
                 workers=2, validate_llm_keys="false", credits_enforce="true",
                 **llm.config())
    r = s.post("/v1/tenants/%s/credits" % ks.ROOT_TENANT,
               {"amount": 100, "reason": "test"}, headers=ks.auth())
    assert r.status == 200, r.body
    yield s
    s.close()
