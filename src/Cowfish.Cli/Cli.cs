using System.Text;
using System.Text.Json;
using Cowfish.Checking;
using Cowfish.Transactions;

namespace Cowfish.Cli;

/// <summary>The cowfish command: verbs over a pool file. Errors go to stderr as one line, with a non-zero exit code.</summary>
internal static class Cli
{
    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>Every verb, in the order the main help lists them. The file-system verbs live in their own files.</summary>
    private static readonly Command[] Commands =
    [
        new("mkfs", "mkfs POOL", "Create an empty pool file (it grows as it fills).", (a, io) => Mkfs(a, io.Out), PoolArgument: -1),
        new("info", "info POOL [--json]", "Show format version, generation, size, and used and free blocks.", Info, Flags: ["--json"]),
        new("check", "check POOL [--json]", "Verify every checksum, key order, reference count and block; exit 1 if any fault is found.", Check, Flags: ["--json"]),
        new("tree", "tree create|list|put|get|del|scan|clone|drop POOL ...", "Low-level access to the pool's B+trees (for tests and debugging).", TreeCommand,
            Flags: ["--json"], Details: TreeHelp, PoolArgument: 1),
        .. VolumeCommands.All,
        .. FileCommands.All,
        .. DataCommands.All,
        .. SharingCommands.All,
        .. TransferCommands.All,
        .. StreamCommands.All,
        .. RelocationCommands.All,
        ServeCommand.Command,
    ];

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr) => Run(argv, new Io(stdout, stderr));

    public static int Run(string[] argv, Io io)
    {
        var (stdout, stderr) = (io.Out, io.Err);
        if (argv.Length == 0 || argv[0] is "--help" or "-h" or "help")
        {
            stdout.Write(MainHelp());
            return argv.Length == 0 ? ExitCodes.Usage : ExitCodes.Ok;
        }
        if (argv[0] == "--version")
        {
            stdout.WriteLine($"cowfish {typeof(Cli).Assembly.GetName().Version?.ToString(3)} (pool format {Format.Layout.FormatVersion})");
            return ExitCodes.Ok;
        }
        var cmd = Commands.FirstOrDefault(c => c.Name == argv[0]);
        if (cmd is null)
        {
            stderr.WriteLine($"cowfish: unknown command '{argv[0]}' (see cowfish --help)");
            return ExitCodes.Usage;
        }
        var rest = argv.Skip(1).ToArray();
        if (rest.Contains("--help") || rest.Contains("-h"))
        {
            stdout.WriteLine($"usage: cowfish {cmd.Usage}\n\n{cmd.Summary}");
            if (cmd.Details is not null) stdout.Write(cmd.Details);
            return ExitCodes.Ok;
        }
        try
        {
            var args = new Args(rest, new HashSet<string>(cmd.Flags ?? []), new HashSet<string>(cmd.Options ?? []));
            // While `cowfish serve` holds the pool, the verb runs there, on the pool it has open.
            if (io.Pools.CanForward && cmd.PoolArgument >= 0 && cmd.PoolArgument < args.Positional.Count
                && ControlClient.TryForward(args.Positional[cmd.PoolArgument], argv, io, out int forwarded))
                return forwarded;
            return cmd.Run(args, io);
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"cowfish {cmd.Name}: {e.Message}");
            stderr.WriteLine($"usage: cowfish {cmd.Usage}");
            return ExitCodes.Usage;
        }
        catch (NotFoundException e)
        {
            stderr.WriteLine($"cowfish {cmd.Name}: {e.Message}");
            return ExitCodes.NotFound;
        }
        catch (CowfishException e)
        {
            stderr.WriteLine($"cowfish {cmd.Name}: {OneLine(e.Message)}");
            return ExitCodes.Error;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"cowfish {cmd.Name}: {OneLine(e.Message)}");
            return ExitCodes.Error;
        }
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");

    private static string MainHelp()
    {
        var sb = new StringBuilder();
        sb.AppendLine("cowfish: a copy-on-write storage engine");
        sb.AppendLine();
        sb.AppendLine("usage: cowfish COMMAND [ARGS] (cowfish COMMAND --help for details)");
        sb.AppendLine();
        foreach (var c in Commands)
        {
            if (c.Usage.Length <= 46) sb.AppendLine($"  {c.Usage,-46} {c.Summary}");
            else sb.AppendLine($"  {c.Usage}").AppendLine($"  {"",-46} {c.Summary}");
        }
        sb.AppendLine();
        sb.AppendLine("paths inside a pool are written VOLUME/dir/file; sizes and offsets take K, M, G, T suffixes (powers of 1024)");
        sb.AppendLine("exit codes: 0 ok, 1 check found faults, 2 usage error, 3 not found (pool path, volume or host file),");
        sb.AppendLine("            4 pool unusable (not a pool, corrupt, busy, I/O error) or request refused (read-only snapshot, not a directory, ...)");
        return sb.ToString();
    }

    private const string TreeHelp = """

        tree create POOL                 create an empty tree and print its id
        tree list POOL [--json]          list tree ids
        tree put POOL TREE KEY VALUE     insert or replace (KEY and VALUE are UTF-8 text)
        tree get POOL TREE KEY           print the value; exit 3 if absent
        tree del POOL TREE KEY           delete; exit 3 if absent
        tree scan POOL TREE [--json]     print every entry in key order
        tree clone POOL TREE             O(1) copy of a tree; prints the new id
        tree drop POOL TREE              drop a tree; its space comes back in the background

        """;

    // --- verbs ----------------------------------------------------------------------------

    private static int Mkfs(Args a, TextWriter o)
    {
        a.Expect(1, "POOL");
        string path = a.Positional[0];
        if (File.Exists(path)) throw new UsageException($"{path} already exists; refusing to overwrite it");
        using var pool = Pool.Create(path);
        var info = pool.Info();
        o.WriteLine($"created pool {path}: format {info.FormatVersion}, id {info.PoolId}, {info.TotalBlocks} blocks of {info.BlockSize} bytes");
        return ExitCodes.Ok;
    }

    private static int Info(Args a, Io io)
    {
        var o = io.Out;
        a.Expect(1, "POOL");
        using var lease = io.Pools.OpenPool(a.Positional[0]);
        var pool = lease.Pool;
        var i = pool.Info();
        if (a.Has("--json"))
        {
            o.WriteLine(JsonSerializer.Serialize(new
            {
                format_version = i.FormatVersion,
                pool_id = i.PoolId,
                generation = i.Generation,
                block_size = i.BlockSize,
                total_blocks = i.TotalBlocks,
                used_blocks = i.UsedBlocks,
                free_blocks = i.FreeBlocks,
                size_bytes = i.SizeBytes,
                trees = i.Trees,
                created = i.Created,
            }, Json));
            return ExitCodes.Ok;
        }
        o.WriteLine($"pool:           {a.Positional[0]}");
        o.WriteLine($"format version: {i.FormatVersion}");
        o.WriteLine($"pool id:        {i.PoolId}");
        o.WriteLine($"generation:     {i.Generation}");
        o.WriteLine($"block size:     {i.BlockSize}");
        o.WriteLine($"size:           {FormatBytes(i.SizeBytes)} ({i.TotalBlocks} blocks)");
        o.WriteLine($"used:           {FormatBytes(i.UsedBlocks * (ulong)i.BlockSize)} ({i.UsedBlocks} blocks)");
        o.WriteLine($"free:           {FormatBytes(i.FreeBlocks * (ulong)i.BlockSize)} ({i.FreeBlocks} blocks)");
        o.WriteLine($"trees:          {i.Trees}");
        o.WriteLine($"created:        {i.Created:u}");
        return ExitCodes.Ok;
    }

    private static int Check(Args a, Io io)
    {
        var o = io.Out;
        a.Expect(1, "POOL");
        using var lease = io.Pools.OpenPool(a.Positional[0]);
        var pool = lease.Pool;
        var r = PoolChecker.Check(pool);
        if (a.Has("--json"))
        {
            o.WriteLine(JsonSerializer.Serialize(new
            {
                clean = r.IsClean,
                generation = r.Generation,
                total_blocks = r.TotalBlocks,
                used_blocks = r.UsedBlocks,
                shared_blocks = r.SharedBlocks,
                trees = r.Trees,
                nodes = r.Nodes,
                pending_drops = r.PendingDrops,
                faults = r.Faults.Select(f => new { kind = f.Kind, address = f.Address, message = f.Message }),
                notes = r.Notes,
            }, Json));
        }
        else
        {
            foreach (var f in r.Faults) o.WriteLine($"fault: {f}");
            foreach (var n in r.Notes) o.WriteLine($"note: {n}");
            o.WriteLine(r.IsClean
                ? $"clean: generation {r.Generation}, {r.Trees} trees, {r.Nodes} nodes, {r.UsedBlocks} of {r.TotalBlocks} blocks used"
                : $"{r.Faults.Count} fault(s) found at generation {r.Generation}");
        }
        return r.IsClean ? ExitCodes.Ok : ExitCodes.Faults;
    }

    private static int TreeCommand(Args a, Io io)
    {
        var o = io.Out;
        if (a.Positional.Count < 2) throw new UsageException("expected a tree verb and POOL");
        string verb = a.Positional[0];
        string path = a.Positional[1];
        var rest = a.Positional.Skip(2).ToArray();
        TreeId TreeArg(int i) => ulong.TryParse(rest[i], out ulong id) ? new TreeId(id) : throw new UsageException($"not a tree id: {rest[i]}");
        void Need(int n, string names) { if (rest.Length != n) throw new UsageException($"tree {verb} takes POOL {names}"); }
        byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

        using var lease = io.Pools.OpenPool(path);
        var pool = lease.Pool;
        // The low-level verbs change plain trees only: a volume's or a file's tree has records
        // that only the file-system layer keeps consistent.
        if (verb is "put" or "del" or "drop" or "clone" && rest.Length > 0)
        {
            using var rt = pool.BeginRead();
            var kind = rt.Tree(TreeArg(0)).Kind;
            if (kind != Cowfish.Trees.TreeKind.Plain)
                throw new InvalidRequestException($"tree {rest[0]} holds {kind} data; use the volume and file commands to change it");
        }
        switch (verb)
        {
            case "create":
            {
                Need(0, "");
                using var tx = pool.BeginWrite();
                var id = tx.CreateTree();
                tx.Commit();
                o.WriteLine(id);
                return ExitCodes.Ok;
            }
            case "list":
            {
                Need(0, "");
                using var rt = pool.BeginRead();
                var ids = rt.ListTrees();
                if (a.Has("--json")) o.WriteLine(JsonSerializer.Serialize(ids.Select(i => i.Value), Json));
                else foreach (var i in ids) o.WriteLine(i);
                return ExitCodes.Ok;
            }
            case "put":
            {
                Need(3, "TREE KEY VALUE");
                using var tx = pool.BeginWrite();
                tx.Put(TreeArg(0), Utf8(rest[1]), Utf8(rest[2]));
                tx.Commit();
                return ExitCodes.Ok;
            }
            case "get":
            {
                Need(2, "TREE KEY");
                using var rt = pool.BeginRead();
                if (!rt.TryGet(TreeArg(0), Utf8(rest[1]), out var v)) throw new NotFoundException($"key '{rest[1]}' does not exist in tree {rest[0]}");
                o.WriteLine(Encoding.UTF8.GetString(v));
                return ExitCodes.Ok;
            }
            case "del":
            {
                Need(2, "TREE KEY");
                using var tx = pool.BeginWrite();
                if (!tx.Delete(TreeArg(0), Utf8(rest[1]))) throw new NotFoundException($"key '{rest[1]}' does not exist in tree {rest[0]}");
                tx.Commit();
                return ExitCodes.Ok;
            }
            case "scan":
            {
                Need(1, "TREE");
                using var rt = pool.BeginRead();
                var entries = rt.Scan(TreeArg(0)).Select(kv => (Encoding.UTF8.GetString(kv.Key), Encoding.UTF8.GetString(kv.Value)));
                if (a.Has("--json")) o.WriteLine(JsonSerializer.Serialize(entries.Select(e => new { key = e.Item1, value = e.Item2 }), Json));
                else foreach (var (k, v) in entries) o.WriteLine($"{k}\t{v}");
                return ExitCodes.Ok;
            }
            case "clone":
            {
                Need(1, "TREE");
                using var tx = pool.BeginWrite();
                var id = tx.CloneTree(TreeArg(0));
                tx.Commit();
                o.WriteLine(id);
                return ExitCodes.Ok;
            }
            case "drop":
            {
                Need(1, "TREE");
                using var tx = pool.BeginWrite();
                tx.DropTree(TreeArg(0));
                tx.Commit();
                return ExitCodes.Ok;
            }
            default:
                throw new UsageException($"unknown tree verb '{verb}'");
        }
    }

    internal static string FormatBytes(ulong n)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double v = n;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{n} B" : $"{v:0.##} {units[u]}";
    }
}
