//! The script registry: every Lua script leasehold runs, declared once with its properties.
//!
//! Each file under `lua/` (outside `lua/prelude/`) is one atomic operation. It reaches Redis in
//! two forms, built here from the same text:
//!
//! - **One function library** ([`LIBRARY`], loaded with `FUNCTION LOAD`, called with `FCALL`):
//!   both preludes, each operation as a local function, and one registered function per
//!   operation. The preludes run once per load instead of on every call, which is most of what
//!   a lock call costs inside Redis. Redis 7 and Valkey; the path `Conn` takes when the server
//!   and the ACL user allow it.
//! - **A script per operation** (`EVALSHA`): a prelude followed by that file, for Redis 6.2 and
//!   for users without `FUNCTION`:
//!   - [`Prelude::Queues`]: the core prelude and the queue prelude (every script but the hot
//!     path);
//!   - [`Prelude::Core`]: the core prelude alone. Redis re-runs a script's whole text on every
//!     call, so the lock hot path (`mutex_acquire`, `mutex_release`) carries only the helpers
//!     it uses;
//!   - [`Prelude::Batch`]: `lua/lock/mutex_batch.lua`, a dispatcher built from the core prelude
//!     and every script declared `batched`, each wrapped as `local function <name>(KEYS, ARGV)`.
//!
//! Either way a call starts with `begin(KEYS)` (and `begin_queues()` after the queue prelude),
//! which sets what is per call; see the head of `lua/prelude/core.lua`.
//!
//! The library's name and its functions' names carry a digest of everything it is built from
//! (`leasehold_<digest>`, `lh_<digest>_<operation>`), so two leasehold versions with different
//! scripts can share a server during a rolling deploy, each calling its own.
//!
//! A script's properties are read here and nowhere else: `grants` (a caller acts on its
//! success, so with [`Durability`](crate::Durability) its writes must reach replicas first; as a
//! function it is refused whole when Redis is out of memory, while the others carry
//! `allow-oom`, so that releases and revokes, which free memory, still run) and `batched`
//! (calls of many tasks may share one `mutex_batch` call, see [`super::batch`]).

use std::sync::LazyLock;

use fred::types::scripts::Script;

/// What goes in front of a script's own file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prelude {
    Core,
    Queues,
    Batch,
}

/// One entry of the registry: where the script lives and its properties.
pub(crate) struct Declared {
    /// The file under `lua/`, without `.lua`; its stem is the script's name.
    path: &'static str,
    body: &'static str,
    prelude: Prelude,
    grants: bool,
    batched: bool,
}

/// One compiled-in script: its name (the file stem under `lua/`), its source and SHA1, its
/// function's name in [`LIBRARY`], and its properties.
pub(crate) struct LuaScript {
    pub(crate) name: &'static str,
    pub(crate) script: Script,
    /// Its name in the function library: `lh_<digest>_<name>`.
    pub(crate) function: String,
    /// A caller acts on its success (it grants something): with durability, its writes must
    /// reach replicas before it counts. Releases, revokes and reads do not: losing a release in
    /// a failover only delays the next holder until the lease's TTL.
    pub(crate) grants: bool,
    /// Calls may go to Redis inside one `mutex_batch` call with other tasks' calls.
    pub(crate) batched: bool,
    #[cfg(test)]
    pub(crate) prelude: Prelude,
}

const CORE_PRELUDE: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/lua/prelude/core.lua"));
const QUEUE_PRELUDE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/lua/prelude/queues.lua"
));

fn stem(path: &'static str) -> &'static str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What starts a call after the core prelude alone, and after both preludes.
const BEGIN_CORE: &str = "begin(KEYS)\n";
const BEGIN_QUEUES: &str = "begin(KEYS) begin_queues()\n";

/// `body` as a local function of the operation's name.
fn wrapped(d: &Declared) -> String {
    format!(
        "local function {}(KEYS, ARGV)\n{}\nend\n",
        stem(d.path),
        d.body
    )
}

impl LuaScript {
    fn new(d: &Declared) -> LuaScript {
        let source = match d.prelude {
            Prelude::Core => format!("{CORE_PRELUDE}{BEGIN_CORE}{}", d.body),
            Prelude::Queues => format!("{CORE_PRELUDE}{QUEUE_PRELUDE}{BEGIN_QUEUES}{}", d.body),
            Prelude::Batch => {
                let mut source = CORE_PRELUDE.to_owned();
                for op in DECLARED.iter().filter(|op| op.batched) {
                    source.push_str(&wrapped(op));
                }
                source.push_str(BEGIN_CORE);
                source.push_str(d.body);
                source
            }
        };
        LuaScript {
            name: stem(d.path),
            function: function_name(stem(d.path)),
            script: Script::from_lua(source),
            grants: d.grants,
            batched: d.batched,
            #[cfg(test)]
            prelude: d.prelude,
        }
    }

    /// The full text Redis runs.
    #[cfg(test)]
    pub(crate) fn source(&self) -> &str {
        self.script.lua().map_or("", |s| &**s)
    }
}

/// The function library: every operation, loaded once with `FUNCTION LOAD`.
pub(crate) struct Library {
    /// `leasehold_<digest>`.
    pub(crate) name: String,
    /// The digest of everything the library is built from.
    pub(crate) digest: &'static str,
    /// A function without keys that returns the digest: whether the library is loaded.
    pub(crate) version_function: String,
    /// The library's code, with its `#!lua name=…` header.
    pub(crate) code: String,
}

/// A digest of everything the library is built from: the same scripts give the same names.
static DIGEST: LazyLock<String> = LazyLock::new(|| {
    let mut all = format!("{CORE_PRELUDE}{QUEUE_PRELUDE}");
    for d in DECLARED {
        all.push_str(&format!("{}|{}|{}\n", d.path, d.grants, d.body));
    }
    fred::util::sha1_hash(&all)[..12].to_owned()
});

fn function_name(stem: &str) -> String {
    format!("lh_{}_{stem}", *DIGEST)
}

/// The name of leasehold's Redis function library, `leasehold_<digest>`: the digest covers
/// every script, so each leasehold version with other scripts has its own library, and two
/// versions share a server without calling each other's code. See `docs/acl.md` for who loads
/// it, and [`Client::load_functions`](crate::Client::load_functions).
pub fn function_library_name() -> &'static str {
    &LIBRARY.name
}

/// The function library (see the module doc).
pub(crate) static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let name = format!("leasehold_{}", *DIGEST);
    let mut code = format!("#!lua name={name}\n{CORE_PRELUDE}{QUEUE_PRELUDE}");
    // The batched operations come first: the batch dispatcher calls them by name.
    let mut ordered: Vec<&Declared> = DECLARED.iter().filter(|d| d.batched).collect();
    ordered.extend(DECLARED.iter().filter(|d| !d.batched));
    for d in &ordered {
        code.push_str(&wrapped(d));
    }
    for d in &ordered {
        let op = stem(d.path);
        // A grant is refused whole when Redis is out of memory (as its first write would be);
        // the rest may run and free memory.
        let flags = if d.grants { "" } else { "'allow-oom'" };
        // What the script form runs first (the hot path leaves the queue prelude's out).
        let begin = match d.prelude {
            Prelude::Queues => BEGIN_QUEUES,
            Prelude::Core | Prelude::Batch => BEGIN_CORE,
        }
        .trim_end();
        code.push_str(&format!(
            "redis.register_function{{function_name='{}', flags={{{flags}}}, \
             callback=function(KEYS, ARGV) {begin} return {op}(KEYS, ARGV) end}}\n",
            function_name(op)
        ));
    }
    let version_function = function_name("version");
    code.push_str(&format!(
        "redis.register_function{{function_name='{version_function}', flags={{'no-writes'}}, \
         callback=function() return '{}' end}}\n",
        *DIGEST
    ));
    Library {
        name,
        digest: &DIGEST,
        version_function,
        code,
    }
});

const fn has(props: &[&str], prop: &str) -> bool {
    let mut i = 0;
    while i < props.len() {
        let (a, b) = (props[i].as_bytes(), prop.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Declares each script as a `static` (compiled on first use) and lists them all in
/// [`DECLARED`] and [`all`].
macro_rules! registry {
    ($($(#[$doc:meta])* $id:ident = $path:literal, $prelude:ident $(, $prop:ident)*;)+) => {
        /// Every script, as declared.
        const DECLARED: &[Declared] = &[$(Declared {
            path: $path,
            body: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/lua/", $path, ".lua")),
            prelude: Prelude::$prelude,
            grants: has(&[$(stringify!($prop)),*], "grants"),
            batched: has(&[$(stringify!($prop)),*], "batched"),
        }),+];

        registry!(@statics 0usize; $($(#[$doc])* $id)+);

        /// Every script of the registry.
        #[cfg(test)]
        pub(crate) fn all() -> Vec<&'static LuaScript> {
            vec![$(&*$id),+]
        }
    };
    (@statics $n:expr; $(#[$doc:meta])* $id:ident $($rest:tt)*) => {
        $(#[$doc])*
        pub(crate) static $id: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(&DECLARED[$n]));
        registry!(@statics $n + 1; $($rest)*);
    };
    (@statics $n:expr;) => {};
}

registry! {
    // Leases.
    LEASE_GRANT = "lease/lease_grant", Queues, grants;
    LEASE_RENEW = "lease/lease_renew", Queues, grants;
    LEASE_ADOPT = "lease/lease_adopt", Queues, grants;
    LEASE_REVOKE = "lease/lease_revoke", Queues;
    LEASE_TTL = "lease/lease_ttl", Queues;
    LEASE_LIST = "lease/lease_list", Queues;
    // Spread namespaces: the layout check (it records the layout once, and every grant checks
    // it again, so it waits for no replica), and a session's sub-lease in one sub-namespace.
    NAMESPACE_LAYOUT = "lease/namespace_layout", Queues;
    LEASE_TOUCH = "lease/lease_touch", Queues, grants;
    // Locks: the mutex hot path, then what every queue-based lock shares.
    MUTEX_ACQUIRE = "lock/mutex_acquire", Core, grants, batched;
    MUTEX_RELEASE = "lock/mutex_release", Core, batched;
    /// The batch dispatcher: every `batched` script inside one call.
    MUTEX_BATCH = "lock/mutex_batch", Batch;
    RWLOCK_ACQUIRE = "lock/rwlock_acquire", Queues, grants;
    SEMAPHORE_ACQUIRE = "lock/semaphore_acquire", Queues, grants;
    LOCK_RELEASE = "lock/lock_release", Queues;
    LOCK_CHECK = "lock/lock_check", Queues;
    INSPECT = "lock/inspect", Queues;
    // Elections.
    ELECTION_CAMPAIGN = "election/election_campaign", Queues, grants;
    ELECTION_PROCLAIM = "election/election_proclaim", Queues, grants;
    ELECTION_RESIGN = "election/election_resign", Queues;
    ELECTION_OBSERVE = "election/election_observe", Queues;
    // Keys with a lease.
    KV_PUT = "kv/kv_put", Queues, grants;
    KV_GET = "kv/kv_get", Queues;
    KV_DELETE = "kv/kv_delete", Queues;
    KV_RANGE = "kv/kv_range", Queues;
    KV_TXN = "kv/kv_txn", Queues, grants;
    KV_WATCH = "kv/kv_watch", Queues;
    // etcd's recipes.
    BARRIER_HOLD = "recipes/barrier_hold", Queues, grants;
    BARRIER_RELEASE = "recipes/barrier_release", Queues;
    BARRIER_CHECK = "recipes/barrier_check", Queues;
    DBARRIER_ENTER = "recipes/dbarrier_enter", Queues, grants;
    DBARRIER_LEAVE = "recipes/dbarrier_leave", Queues;
    QUEUE_PUSH = "recipes/queue_push", Queues, grants;
    QUEUE_POP = "recipes/queue_pop", Queues;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lua_file_is_declared_once() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/lua");
        let mut files = Vec::new();
        for dir in std::fs::read_dir(root).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() || dir.ends_with("prelude") {
                continue;
            }
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                files.push(f.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        files.sort();
        let mut declared: Vec<String> = all().iter().map(|s| s.name.to_owned()).collect();
        declared.sort();
        assert_eq!(files, declared);
    }

    #[test]
    fn the_hot_path_carries_only_the_core_prelude() {
        for s in all() {
            let has_queues = s.source().contains(QUEUE_PRELUDE);
            assert_eq!(has_queues, s.prelude == Prelude::Queues, "{}", s.name);
            assert!(s.source().starts_with(CORE_PRELUDE), "{}", s.name);
        }
        assert_eq!(MUTEX_ACQUIRE.prelude, Prelude::Core);
        assert_eq!(MUTEX_RELEASE.prelude, Prelude::Core);
    }

    #[test]
    fn the_batch_script_holds_every_batched_script_and_nothing_else() {
        let source = MUTEX_BATCH.source();
        for s in all() {
            let wrapped = format!("local function {}(KEYS, ARGV)", s.name);
            assert_eq!(source.contains(&wrapped), s.batched, "{}", s.name);
        }
        assert!(MUTEX_ACQUIRE.batched && MUTEX_RELEASE.batched);
        // The dispatcher carries the core prelude once: what it wraps must need no more.
        assert!(all()
            .iter()
            .filter(|s| s.batched)
            .all(|s| s.prelude == Prelude::Core));
    }
}
