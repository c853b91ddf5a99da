using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace Cowfish.Bench;

/// <summary>The benchmark cannot run on this machine (no root, no loop devices, a tool missing).</summary>
internal sealed class BenchUnavailableException(string message) : Exception(message);

/// <summary>Linux calls the kernel baselines need: reflink, extent counts, page-cache eviction, syncs, btrfs snapshots.</summary>
internal static unsafe class Native
{
    private const ulong FICLONE = 0x40049409;              // _IOW(0x94, 9, int)
    private const ulong FS_IOC_FIEMAP = 0xC020660B;        // _IOWR('f', 11, struct fiemap)
    private const ulong BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417; // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2), 4096 bytes
    private const ulong BTRFS_SUBVOL_RDONLY = 1UL << 1;
    private const int O_RDONLY = 0, O_DIRECTORY = 0x10000, O_CLOEXEC = 0x80000;
    private const int POSIX_FADV_DONTNEED = 4;

    [DllImport("libc", SetLastError = true)] private static extern int ioctl(int fd, ulong request, nint arg);
    [DllImport("libc", SetLastError = true)] private static extern int fsync(int fd);
    [DllImport("libc", SetLastError = true)] private static extern int syncfs(int fd);
    [DllImport("libc", SetLastError = true)] private static extern int posix_fadvise(int fd, long offset, long len, int advice);
    [DllImport("libc", SetLastError = true)] private static extern uint geteuid();
    [DllImport("libc", SetLastError = true, CharSet = CharSet.Ansi)] private static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);
    [DllImport("libc", SetLastError = true)] private static extern int close(int fd);

    public static bool IsRoot => geteuid() == 0;

    /// <summary>Opens a file read-write with O_DIRECT (buffers and offsets must then be 4 KiB-aligned).</summary>
    public static SafeFileHandle OpenDirect(string path)
    {
        const int O_RDWR = 2, O_DIRECT = 0x4000;
        int fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
        if (fd < 0) throw Error($"open {path} with O_DIRECT");
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    private static T WithFd<T>(SafeFileHandle h, Func<int, T> f)
    {
        bool added = false;
        h.DangerousAddRef(ref added);
        try { return f((int)h.DangerousGetHandle()); }
        finally { if (added) h.DangerousRelease(); }
    }

    private static IOException Error(string what) => new($"{what} failed: errno {Marshal.GetLastPInvokeError()} ({Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())})");

    /// <summary>FICLONE: <paramref name="dst"/> shares all of <paramref name="src"/>'s data (what <c>cp --reflink=always</c> does).</summary>
    public static void Ficlone(SafeFileHandle dst, SafeFileHandle src)
    {
        int r = WithFd(dst, d => WithFd(src, s => ioctl(d, FICLONE, s)));
        if (r != 0) throw Error("ioctl(FICLONE)");
    }

    /// <summary>Mapped extents of a file, as FIEMAP reports them (after syncing it).</summary>
    public static long ExtentCount(string path)
    {
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        var buf = stackalloc byte[32];
        new Span<byte>(buf, 32).Clear();
        *(ulong*)(buf + 8) = ulong.MaxValue; // fm_length
        *(uint*)(buf + 16) = 1;              // FIEMAP_FLAG_SYNC
        int r = WithFd(h, fd => ioctl(fd, FS_IOC_FIEMAP, (nint)buf));
        if (r != 0) throw Error($"ioctl(FIEMAP) on {path}");
        return *(uint*)(buf + 20);           // fm_mapped_extents
    }

    public static void Fsync(SafeFileHandle h)
    {
        if (WithFd(h, fsync) != 0) throw Error("fsync");
    }

    /// <summary>syncfs on the file system that holds <paramref name="path"/>.</summary>
    public static void SyncFs(string path)
    {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw Error($"open {path}");
        try { if (syncfs(fd) != 0) throw Error($"syncfs {path}"); }
        finally { close(fd); }
    }

    public static void SyncFs(SafeFileHandle h)
    {
        if (WithFd(h, syncfs) != 0) throw Error("syncfs");
    }

    /// <summary>Drops a file's clean pages from the page cache (it is synced first), so the next read comes from the device.</summary>
    /// <remarks>Opened with open(2), not .NET, so that the pool's own exclusive lock on the file does not get in the way.</remarks>
    public static void DropCache(string path)
    {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw Error($"open {path}");
        try
        {
            if (fsync(fd) != 0) throw Error($"fsync {path}");
            int r = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            if (r != 0) throw new IOException($"posix_fadvise(DONTNEED) on {path} failed: {r}");
        }
        finally { close(fd); }
    }

    /// <summary>BTRFS_IOC_SNAP_CREATE_V2: snapshot of subvolume <paramref name="source"/> as <paramref name="parentDir"/>/<paramref name="name"/>.</summary>
    public static void BtrfsSnapshot(string source, string parentDir, string name, bool readOnly)
    {
        int src = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (src < 0) throw Error($"open {source}");
        int dst = open(parentDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dst < 0) { close(src); throw Error($"open {parentDir}"); }
        try
        {
            var args = new byte[4096];
            BitConverter.TryWriteBytes(args.AsSpan(0), (long)src);
            BitConverter.TryWriteBytes(args.AsSpan(16), readOnly ? BTRFS_SUBVOL_RDONLY : 0UL);
            var n = Encoding.UTF8.GetBytes(name);
            if (n.Length >= 4040) throw new ArgumentException("snapshot name too long");
            n.CopyTo(args.AsSpan(56));
            fixed (byte* p = args)
            {
                if (ioctl(dst, BTRFS_IOC_SNAP_CREATE_V2, (nint)p) != 0) throw Error("ioctl(BTRFS_IOC_SNAP_CREATE_V2)");
            }
        }
        finally
        {
            close(dst);
            close(src);
        }
    }
}

/// <summary>Runs external commands.</summary>
internal static class Shell
{
    /// <summary>Runs a command and returns its standard output; throws with its standard error when it fails.</summary>
    public static string Run(string file, params string[] args) => Run(file, args, TimeSpan.FromMinutes(10));

    public static string Run(string file, string[] args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"{file} did not start");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within {timeout}");
        }
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new IOException($"`{file} {string.Join(' ', args)}` exited with {p.ExitCode}: {stderr.Result.Trim()} {stdout.Result.Trim()}".Trim());
        return stdout.Result;
    }

    /// <summary>Runs a command and returns its wall time in seconds (process start included).</summary>
    public static double Timed(string file, params string[] args)
    {
        var sw = Stopwatch.StartNew();
        Run(file, args);
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>The full path of a program on PATH, or null.</summary>
    public static string? Which(string name)
    {
        foreach (var d in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin:/usr/sbin:/sbin").Split(':').Concat(["/usr/sbin", "/sbin"]))
        {
            var p = Path.Combine(d, name);
            if (File.Exists(p)) return p;
        }
        return null;
    }
}

/// <summary>fio, run as a child process, with its JSON report.</summary>
internal static class Fio
{
    public sealed record Result(double Seconds, long Bytes, long Ios, double MaxLatencyNs, double P99LatencyNs, string CommandLine)
    {
        public double BytesPerSecond => Bytes / Seconds;
        public double Iops => Ios / Seconds;
    }

    /// <summary>
    /// Runs one fio job and returns its read or write figures. Seconds is fio's job runtime, which
    /// includes the final fsync when <c>--end_fsync=1</c> is given.
    /// </summary>
    public static Result Run(string outJson, bool write, params string[] args)
    {
        var all = args.Concat(["--output-format=json", $"--output={outJson}"]).ToArray();
        Shell.Run("fio", all);
        using var doc = JsonDocument.Parse(ExtractJson(File.ReadAllText(outJson)));
        File.Delete(outJson);
        var job = doc.RootElement.GetProperty("jobs")[0];
        var d = job.GetProperty(write ? "write" : "read");
        double seconds = job.GetProperty("job_runtime").GetDouble() / 1000.0;
        long bytes = d.GetProperty("io_bytes").GetInt64();
        long ios = d.GetProperty("total_ios").GetInt64();
        var clat = d.GetProperty("clat_ns");
        double max = clat.GetProperty("max").GetDouble();
        double p99 = clat.TryGetProperty("percentile", out var pc) && pc.TryGetProperty("99.000000", out var v) ? v.GetDouble() : double.NaN;
        return new Result(seconds, bytes, ios, max, p99, "fio " + string.Join(' ', args));
    }

    // fio may print notes before the JSON object.
    private static string ExtractJson(string s)
    {
        int i = s.IndexOf('{');
        return i < 0 ? s : s[i..];
    }
}

/// <summary>
/// A file system (XFS with reflink, or btrfs) made on a loop device over a sparse file in the
/// benchmark directory, so that it sits on the same disk as the Cowfish pools. The loop device
/// uses direct I/O, so the backing file adds no second page cache. Disposing unmounts, detaches
/// and deletes; a SIGINT/SIGTERM does the same (lazily) before the process ends.
/// </summary>
internal sealed class LoopFs : IDisposable
{
    private static readonly List<LoopFs> Live = new();
    private static readonly List<PosixSignalRegistration> Signals = new();
    private bool _mounted, _attached, _disposed;

    private LoopFs(string kind, string image, string mount)
    {
        Kind = kind;
        Image = image;
        Mount = mount;
    }

    public string Kind { get; }
    public string Image { get; }
    public string Mount { get; }
    public string Device { get; private set; } = "";

    /// <summary>Where the benchmark's files go: the mount point, or for btrfs the subvolume <c>sv</c>.</summary>
    public string DataDir => Kind == "btrfs" ? Path.Combine(Mount, "sv") : Mount;

    public string Describe() => Kind == "xfs"
        ? $"XFS (`mkfs.xfs -m reflink=1`) on {Device} (loop, direct I/O) over a sparse {Fmt.MB(new FileInfo(Image).Length)} file in the pool directory"
        : $"btrfs (`mkfs.btrfs`, defaults) on {Device} (loop, direct I/O) over a sparse {Fmt.MB(new FileInfo(Image).Length)} file in the pool directory; files in subvolume `sv`";

    public static LoopFs Create(string kind, string image, long bytes, string mount)
    {
        var fs = new LoopFs(kind, image, mount);
        lock (Live)
        {
            if (Signals.Count == 0)
            {
                Signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, _ => EmergencyCleanup()));
                Signals.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => EmergencyCleanup()));
            }
            Live.Add(fs);
        }
        try
        {
            using (var f = new FileStream(image, FileMode.CreateNew, FileAccess.Write)) f.SetLength(bytes);
            try { fs.Device = Shell.Run("losetup", "-f", "--show", "--direct-io=on", image).Trim(); }
            catch (IOException e) { throw new BenchUnavailableException($"cannot attach a loop device ({e.Message}); the files benchmark needs root and working loop devices"); }
            fs._attached = true;
            if (kind == "xfs") Shell.Run("mkfs.xfs", "-f", "-q", "-m", "reflink=1", fs.Device);
            else Shell.Run("mkfs.btrfs", "-f", "-q", fs.Device);
            Directory.CreateDirectory(mount);
            try { Shell.Run("mount", fs.Device, mount); }
            catch (IOException e) { throw new BenchUnavailableException($"cannot mount {kind} from {fs.Device} on {mount} ({e.Message})"); }
            fs._mounted = true;
            if (kind == "btrfs") Shell.Run("btrfs", "-q", "subvolume", "create", fs.DataDir);
            return fs;
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Exception? first = null;
        if (_mounted)
        {
            for (int attempt = 0; ; attempt++)
            {
                try { Shell.Run("umount", Mount); _mounted = false; break; }
                catch (IOException e) when (attempt < 10) { _ = e; Thread.Sleep(500); }
                catch (IOException e)
                {
                    first = e;
                    try { Shell.Run("umount", "-l", Mount); _mounted = false; } catch (IOException) { }
                    break;
                }
            }
        }
        if (_attached)
        {
            try { Shell.Run("losetup", "-d", Device); _attached = false; }
            catch (IOException e) { first ??= e; }
        }
        if (!_mounted)
        {
            try { if (Directory.Exists(Mount)) Directory.Delete(Mount); } catch (IOException) { }
        }
        try { File.Delete(Image); } catch (IOException e) { first ??= e; }
        lock (Live) Live.Remove(this);
        if (first is not null) Console.Error.WriteLine($"cleanup of {Kind} at {Mount}: {first.Message} — check `losetup -a` and `mount`");
    }

    private static void EmergencyCleanup()
    {
        LoopFs[] live;
        lock (Live) live = Live.ToArray();
        foreach (var fs in live)
        {
            Console.Error.WriteLine($"interrupted: unmounting {fs.Mount} and detaching {fs.Device}");
            try { if (fs._mounted) Shell.Run("umount", "-l", fs.Mount); } catch (Exception) { }
            try { if (fs._attached) Shell.Run("losetup", "-d", fs.Device); } catch (Exception) { }
            try { File.Delete(fs.Image); } catch (Exception) { }
        }
    }

    /// <summary>Why the benchmark cannot run here, or null when it can.</summary>
    public static string? Preflight()
    {
        if (!OperatingSystem.IsLinux()) return "the files benchmark runs on Linux only (it compares against XFS and btrfs on loop devices)";
        if (!Native.IsRoot) return "the files benchmark needs root: it makes XFS and btrfs file systems on loop devices and mounts them (run it with sudo)";
        var missing = new[] { "losetup", "mount", "umount", "mkfs.xfs", "mkfs.btrfs", "btrfs", "fio", "cp" }.Where(t => Shell.Which(t) is null).ToList();
        if (missing.Count > 0) return $"missing tools: {string.Join(", ", missing)} (apt-get install -y xfsprogs btrfs-progs fio)";
        if (!File.Exists("/dev/loop-control")) return "no /dev/loop-control: loop devices are not available (modprobe loop)";
        string fss = File.Exists("/proc/filesystems") ? File.ReadAllText("/proc/filesystems") : "";
        foreach (var k in new[] { "xfs", "btrfs" })
        {
            if (fss.Contains(k, StringComparison.Ordinal)) continue;
            try { Shell.Run("modprobe", k); } catch (Exception e) when (e is IOException or System.ComponentModel.Win32Exception) { return $"the kernel has no {k} support (modprobe {k} failed)"; }
        }
        return null;
    }
}
