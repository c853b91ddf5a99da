using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Cowfish.Cli;

/// <summary>
/// Finds the data of a host file with lseek(SEEK_DATA / SEEK_HOLE), so that import reads and writes
/// only what the file holds. Where that is not available (another OS, a file system that refuses the
/// whence values), the whole file counts as data, which is slower but still correct.
/// </summary>
internal static partial class SparseFile
{
    // Linux values; macOS and the BSDs number them the other way round, so only Linux uses them.
    private const int SeekData = 3, SeekHole = 4;
    private const int ENXIO = 6;

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);

    /// <summary>The (offset, length) ranges of [0, size) that hold data, in order; holes are left out.</summary>
    public static List<(long Offset, long Length)> DataRanges(SafeFileHandle handle, long size)
    {
        if (size <= 0) return [];
        List<(long, long)> all = [(0, size)];
        if (!OperatingSystem.IsLinux()) return all;
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            int fd = (int)handle.DangerousGetHandle();
            var ranges = new List<(long, long)>();
            for (long pos = 0; pos < size;)
            {
                long data = LSeek(fd, pos, SeekData);
                if (data < 0)
                {
                    // ENXIO: no data at or after pos. Anything else (EINVAL on an old file system): give up on holes.
                    if (Marshal.GetLastPInvokeError() == ENXIO) break;
                    return all;
                }
                if (data >= size) break;
                long hole = LSeek(fd, data, SeekHole);
                if (hole < 0) return all;
                hole = Math.Min(hole, size);
                if (hole <= data) return all;
                ranges.Add((data, hole - data));
                pos = hole;
            }
            return ranges;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return all;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }
}
