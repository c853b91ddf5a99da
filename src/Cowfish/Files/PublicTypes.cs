namespace Cowfish.Files;

/// <summary>
/// A volume or snapshot in the pool. <see cref="Received"/> is set on a snapshot made by receiving a
/// send stream: the identity of the snapshot it came from.
/// </summary>
public sealed record VolumeInfo(string Name, TreeId Tree, bool ReadOnly, DateTimeOffset Created, Guid Id, Guid? Origin, Guid? Received = null);

/// <summary>What stat shows about a file, directory or symlink.</summary>
public sealed record FileStat(
    ulong Inode,
    FileType Type,
    uint Mode,
    uint Uid,
    uint Gid,
    uint Links,
    ulong Size,
    DateTimeOffset Accessed,
    DateTimeOffset Modified,
    DateTimeOffset Changed,
    DateTimeOffset Born,
    ulong DataVersion);

/// <summary>One entry of a directory listing.</summary>
public sealed record DirectoryEntry(string Name, ulong Inode, FileType Type);

/// <summary>
/// Space use of a file, directory tree, volume or pool: Total is every byte of data the files
/// reference, Exclusive what only they reference (what deleting them would free), Shared the rest.
/// </summary>
public sealed record SpaceUsage(ulong TotalBytes, ulong ExclusiveBytes, ulong SharedBytes);

/// <summary>Raised when a write, clone or other change targets a read-only snapshot.</summary>
public sealed class ReadOnlyVolumeException(string volume) : CowfishException($"volume '{volume}' is a read-only snapshot");

/// <summary>How a range of a file is stored.</summary>
public enum AllocationKind
{
    /// <summary>Written data.</summary>
    Data,
    /// <summary>Allocated but never written (preallocated or zeroed with allocation): reads as zeros.</summary>
    Unwritten,
    /// <summary>Not allocated: reads as zeros.</summary>
    Hole,
}

/// <summary>One run of a file's bytes that are all stored the same way.</summary>
public readonly record struct AllocationSegment(long Offset, long Length, AllocationKind Kind);
