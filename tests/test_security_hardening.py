

@pytest.mark.usefixtures("usual_umask")
def test_files_and_folders_left_open_by_an_older_version_are_closed(tmp_path: Path) -> None:
    folder, database = tmp_path / "data", tmp_path / "data" / "fieldhub.db"
    folder.mkdir(mode=0o755)
    database.write_bytes(b"")  # 0644, as an older fieldhub left it
    private_file(private_dir(folder) / "fieldhub.db")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert database.stat().st_mode & 0o777 == 0o600
    write_private(folder / "state.json", b"{}")
    assert (folder / "state.json").stat().st_mode & 0o777 == 0o600
    assert (folder / "state.json").read_bytes() == b"{}"
