-- Check (and, for the first spread client, record) the namespace's layout: Client::build
-- (src/client/builder.rs). The same check runs in every lease grant.
-- KEYS: rev, leases, meta
-- ARGV: spread (sub-namespaces, 1 when unspread), name hash version
-- Returns {spread, hash version} in force. Fails with LHLAYOUT when they are not the client's
-- (see check_layout in lua/prelude/queues.lua). Reads nothing else: a client of a namespace
-- with foreign data at its other keys still connects, and meets the data where it uses it.
local n, hash = check_layout(KEYS[3] or '', ARGV[1], ARGV[2] or '')
return { n, hash }
