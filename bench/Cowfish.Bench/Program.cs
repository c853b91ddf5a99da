using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Cowfish.Bench;

// Cowfish benchmarks. Every figure is printed next to a baseline measured in the same run, on the
// same machine, and as a ratio to it. See docs/benchmarks.md.

const string Usage = """
    usage: Cowfish.Bench <all|tree|commit|clone|files|send|relocate|defrag|compact> [--quick] [--dir DIR] [--clone-max-exp E] [--out FILE]

      all      tree, commit and clone, in this order (not files: it needs root)
      tree     insert / point lookup / forward scan vs SortedDictionary; insert disk traffic vs raw write bandwidth
      commit   small-commit latency, 1 thread and 8 threads (group commit), vs raw pwrite 4 KiB + fdatasync
      clone    CloneTree cost at 10^3 .. 10^E keys vs the cost at 10^3; full copy for contrast
      files    the files layer vs XFS (reflink) and btrfs on loop devices and fio: clone at 10^3 .. 10^6
               extents, snapshot, latency during a clone, sequential and CoW I/O (needs root; ~11 min,
               --quick up to 10^4 extents)
      send     full send, send | receive and incremental send (1 % of a 1 GiB file's 4 KiB blocks changed) vs btrfs
               send on a loop device (btrfs part needs root; --quick: 256 MiB)
      relocate relocation (move the tail and shrink) vs btrfs resize and full balance; send alone and during a
               relocation; worst 4 KiB write during it; ~1 GiB live (btrfs part needs root; --quick: 256 MiB)
      defrag   defrag of a fragmented 1 GiB file that a snapshot shares vs btrfs filesystem defragment: time,
               fragments, cold sequential read before and after, space (btrfs part needs root; --quick: 128 MiB)
      compact  compaction of scattered free space vs btrfs balance -dusage=25: data moved / s, free space in long
               runs, fragments of a file written after (btrfs part needs root; 1 GiB written, --quick: 128 MiB)

      --quick            smaller sizes (under a minute)
      --dir DIR          where pool and scratch files go (default: bench/results/tmp-<pid> in the repository,
                         which must be on the disk being measured); removed afterwards
      --clone-max-exp E  largest clone size is 10^E keys (default 7, --quick 5)
      --out FILE         also write the markdown report to FILE (default: bench/results/<mode>-<utc time>.md)
    """;

string? command = null;
bool quick = false;
string? dir = null, outFile = null;
int? cloneMax = null;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--quick": quick = true; break;
        case "--dir" when i + 1 < args.Length: dir = args[++i]; break;
        case "--out" when i + 1 < args.Length: outFile = args[++i]; break;
        case "--clone-max-exp" when i + 1 < args.Length && int.TryParse(args[i + 1], out int e) && e >= 3 && e <= 8:
            cloneMax = e; i++; break;
        case "-h" or "--help": Console.WriteLine(Usage); return 0;
        default:
            if (command is null && !args[i].StartsWith('-')) { command = args[i]; break; }
            Console.Error.WriteLine($"unexpected argument '{args[i]}'\n\n{Usage}");
            return 2;
    }
}
command ??= "all";
string[] known = ["all", "tree", "commit", "clone", "files", "send", "relocate", "defrag", "compact"];
if (!known.Contains(command))
{
    Console.Error.WriteLine($"unknown benchmark '{command}'\n\n{Usage}");
    return 2;
}

if (command == "files" && LoopFs.Preflight() is { } unavailable)
{
    Console.Error.WriteLine($"files: cannot run here: {unavailable}");
    return 3;
}

string? repo = FindRepo();
bool ownDir = dir is null;
dir ??= repo is not null
    ? Path.Combine(repo, "bench", "results", $"tmp-{Environment.ProcessId}")
    : Path.Combine(Path.GetTempPath(), $"cowfish-bench-{Environment.ProcessId}");
dir = Path.GetFullPath(dir);
Directory.CreateDirectory(dir);
var ctx = new BenchContext
{
    Quick = quick,
    Dir = dir,
    CloneMaxExponent = cloneMax ?? (quick ? 5 : 7),
    Log = Console.Error,
};

var report = new StringBuilder();
report.AppendLine($"## Cowfish benchmarks — `{command}`{(quick ? " --quick" : "")}");
report.AppendLine();
report.AppendLine($"- date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
report.AppendLine($"- machine: {Environment.ProcessorCount} cores ({CpuModel()}), {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}");
report.AppendLine($"- build: {(IsOptimized() ? "Release" : "**Debug — figures not meaningful**")}; engine commit: {GitDescribe(repo)}");
report.AppendLine($"- scratch directory: `{dir}` ({FsInfo(dir)})");
report.AppendLine($"- command line: `{string.Join(' ', args)}`");
report.AppendLine();
Console.Write(report);

var total = Stopwatch.StartNew();
int status = 0;
try
{
    foreach (var (name, run) in new (string, Func<BenchContext, string>)[]
             { ("tree", TreeBench.Run), ("commit", CommitBench.Run), ("clone", CloneBench.Run), ("files", FileBench.Run), ("send", SendBench.Run), ("relocate", RelocateBench.Run), ("defrag", DefragBench.Run), ("compact", CompactBench.Run) })
    {
        if (command != name && (command != "all" || name is "files" or "send" or "relocate" or "defrag" or "compact")) continue;
        var sw = Stopwatch.StartNew();
        string section = run(ctx);
        section += $"\n_{name}: {Fmt.Time(sw.Elapsed.TotalSeconds)}_\n\n";
        report.Append(section);
        Console.Write(section);
    }
    string tail = (ctx.KeyFigures.Count > 0 ? $"### Key figures\n\n{ctx.KeyFigures}\n" : "") + $"_total: {Fmt.Time(total.Elapsed.TotalSeconds)}_\n";
    report.Append(tail);
    Console.Write(tail);
}
catch (Exception e)
{
    Console.Error.WriteLine($"benchmark failed: {e}");
    report.AppendLine().AppendLine("**benchmark failed:**").AppendLine("```").AppendLine(e.ToString()).AppendLine("```");
    status = 1;
}
finally
{
    if (ownDir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException e) { Console.Error.WriteLine($"could not remove {dir}: {e.Message}"); }
    }
    else
    {
        foreach (var f in Directory.EnumerateFiles(dir, "*.pool").Concat(Directory.EnumerateFiles(dir, "raw-*.dat")))
            File.Delete(f);
    }
}

outFile ??= repo is not null
    ? Path.Combine(repo, "bench", "results", $"{command}{(quick ? "-quick" : "")}-{DateTime.UtcNow:yyyyMMdd-HHmmss}.md")
    : null;
if (outFile is not null)
{
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outFile))!);
    File.WriteAllText(outFile, report.ToString());
    Console.Error.WriteLine($"report written to {outFile}");
}
return status;

static string? FindRepo()
{
    foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
    {
        for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Cowfish.slnx"))) return d.FullName;
    }
    return null;
}

static string CpuModel()
{
    try
    {
        var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
        return line?.Split(':', 2)[1].Trim() ?? RuntimeInformation.ProcessArchitecture.ToString();
    }
    catch (IOException) { return RuntimeInformation.ProcessArchitecture.ToString(); }
}

static bool IsOptimized()
{
    var attr = typeof(Cowfish.Transactions.Pool).Assembly.GetCustomAttributes(typeof(DebuggableAttribute), false)
        .OfType<DebuggableAttribute>().FirstOrDefault();
    return attr is null || !attr.IsJITOptimizerDisabled;
}

static string GitDescribe(string? repo)
{
    if (repo is null) return "unknown";
    try
    {
        string head = RunGit(repo, "rev-parse --short HEAD");
        string dirty = RunGit(repo, "status --porcelain -- src");
        return head + (dirty.Length > 0 ? " (src/ has uncommitted changes)" : "");
    }
    catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
    {
        return "unknown";
    }
}

static string RunGit(string repo, string arguments)
{
    var psi = new ProcessStartInfo("git", $"-C \"{repo}\" {arguments}") { RedirectStandardOutput = true, RedirectStandardError = true };
    using var p = Process.Start(psi) ?? throw new InvalidOperationException("git did not start");
    string o = p.StandardOutput.ReadToEnd().Trim();
    p.WaitForExit();
    return o;
}

static string FsInfo(string dir)
{
    try
    {
        var d = new DriveInfo(dir);
        return $"{d.DriveFormat} on {d.Name}";
    }
    catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
    {
        return "filesystem unknown";
    }
}
