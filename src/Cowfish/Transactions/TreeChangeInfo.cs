namespace Cowfish.Transactions;

/// <summary>A key that differs between two trees: only in the older (New is null), only in the newer (Old is null), or changed.</summary>
public readonly record struct KeyChange(byte[] Key, byte[]? Old, byte[]? New);
