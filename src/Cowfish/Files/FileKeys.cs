using System.Buffers.Binary;
using System.Text;

namespace Cowfish.Files;

/// <summary>
/// Keys of a volume tree (layout in docs/format.md). Inode numbers are big-endian so that all
/// items of one inode sort together:
/// <list type="bullet">
/// <item><c>0x00</c> → the volume header;</item>
/// <item><c>0x01 | ino</c> → inode;</item>
/// <item><c>0x02 | parent ino | name</c> → directory entry;</item>
/// <item><c>0x03 | ino | name</c> → extended attribute;</item>
/// <item><c>0x04 | ino | parent ino | name</c> → inode back-reference (one per hard link).</item>
/// </list>
/// </summary>
internal static class FileKeys
{
    public const byte Header = 0x00, Inode = 0x01, DirEntry = 0x02, Xattr = 0x03, InodeRef = 0x04;
    public const int MaxNameBytes = 255;

    public static readonly byte[] HeaderKey = [Header];

    public static byte[] InodeKey(ulong ino) => WithIno(Inode, ino, 0);

    /// <summary><see cref="InodeKey(ulong)"/> into a caller's buffer of 9 bytes.</summary>
    public static ReadOnlySpan<byte> InodeKey(ulong ino, Span<byte> into)
    {
        into[0] = Inode;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(into[1..], ino);
        return into[..9];
    }

    public static byte[] DirEntryKey(ulong parent, ReadOnlySpan<byte> name)
    {
        var k = WithIno(DirEntry, parent, name.Length);
        name.CopyTo(k.AsSpan(9));
        return k;
    }

    /// <summary>First and past-the-last keys of a directory's entries.</summary>
    public static (byte[] From, byte[] To) DirRange(ulong parent) => (WithIno(DirEntry, parent, 0), WithIno(DirEntry, parent + 1, 0));

    public static byte[] XattrKey(ulong ino, ReadOnlySpan<byte> name)
    {
        var k = WithIno(Xattr, ino, name.Length);
        name.CopyTo(k.AsSpan(9));
        return k;
    }

    public static (byte[] From, byte[] To) XattrRange(ulong ino) => (WithIno(Xattr, ino, 0), WithIno(Xattr, ino + 1, 0));

    public static byte[] InodeRefKey(ulong ino, ulong parent, ReadOnlySpan<byte> name)
    {
        var k = new byte[17 + name.Length];
        k[0] = InodeRef;
        BinaryPrimitives.WriteUInt64BigEndian(k.AsSpan(1), ino);
        BinaryPrimitives.WriteUInt64BigEndian(k.AsSpan(9), parent);
        name.CopyTo(k.AsSpan(17));
        return k;
    }

    public static (byte[] From, byte[] To) InodeRefRange(ulong ino) => (WithIno(InodeRef, ino, 0), WithIno(InodeRef, ino + 1, 0));

    public static (ulong Parent, byte[] Name) ParseInodeRef(byte[] key) =>
        (BinaryPrimitives.ReadUInt64BigEndian(key.AsSpan(9)), key.AsSpan(17).ToArray());

    public static byte[] NameOf(byte[] dirEntryOrXattrKey) => dirEntryOrXattrKey.AsSpan(9).ToArray();

    /// <summary>Key of an extent record: the file block where it starts.</summary>
    public static byte[] ExtentKey(ulong fileBlock)
    {
        var k = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(k, fileBlock);
        return k;
    }

    public static ulong ParseExtentKey(ReadOnlySpan<byte> key) => BinaryPrimitives.ReadUInt64BigEndian(key);

    /// <summary><see cref="ExtentKey(ulong)"/> into a caller's buffer of 8 bytes.</summary>
    public static ReadOnlySpan<byte> ExtentKey(ulong fileBlock, Span<byte> into)
    {
        BinaryPrimitives.WriteUInt64BigEndian(into, fileBlock);
        return into[..8];
    }

    /// <summary>Validates a path component: 1 to 255 bytes of UTF-8, no '/' and no NUL, not "." or "..".</summary>
    public static byte[] Name(string name)
    {
        if (string.IsNullOrEmpty(name)) throw new InvalidRequestException("empty file name");
        if (name is "." or "..") throw new InvalidRequestException($"'{name}' cannot be used as a name");
        if (name.Contains('/') || name.Contains('\0')) throw new InvalidRequestException($"name '{name}' contains '/' or NUL");
        var b = Encoding.UTF8.GetBytes(name);
        if (b.Length > MaxNameBytes) throw new InvalidRequestException($"name of {b.Length} bytes is over the limit of {MaxNameBytes}");
        return b;
    }

    private static byte[] WithIno(byte prefix, ulong ino, int extra)
    {
        var k = new byte[9 + extra];
        k[0] = prefix;
        BinaryPrimitives.WriteUInt64BigEndian(k.AsSpan(1), ino);
        return k;
    }
}
