fn main() {
    for (file, crd) in kappa_operator::api::crds() {
        println!("--- {file}\n{}", kappa_operator::api::crd_yaml(&crd).unwrap());
    }
}
