//! Writes a test PKI (see `mmc_tls::testpki`) into the folder given as the only argument; for
//! the C and Python tests. Not for production certificates.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: mmc-testpki DIR");
        std::process::exit(2);
    };
    match mmc_tls::testpki::write(std::path::Path::new(&dir)) {
        Ok(pki) => println!("{}", pki.dir.display()),
        Err(e) => {
            eprintln!("mmc-testpki: {e}");
            std::process::exit(1);
        }
    }
}
