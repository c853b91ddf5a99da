using Cowfish.Files;

namespace Cowfish.Streams;

/// <summary>
/// One decoded record, waiting to be applied in its batch's transaction. A WRITE's data is already
/// on disk in a reserved run (<see cref="Disk"/>, with <see cref="Crcs"/>); the transaction claims it.
/// </summary>
internal sealed class ReceiveCommand
{
    public RecordType Type;
    public long Offset;
    public ulong Ino, Dir, Block, Count, SrcIno, SrcBlock, Disk, NextIno;
    public FileType FileType;
    public byte[] Name = [];
    public byte[] Value = [];
    public uint[] Crcs = [];
    public Inode? Inode;
}
